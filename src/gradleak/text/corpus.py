"""A small English corpus that ships with gradleak, used to train the offline WordPiece tokenizer.

Written for this project (MIT, like the rest of gradleak), so the tokenizer is identical on every
machine and every Python version: no download, no dependence on the docstrings of the installed
Python. It is a list of common English words followed by short plain sentences; every word in it
ends up as a whole token in the trained vocabulary, and anything else is split into word pieces
(every ASCII letter, digit and punctuation mark is in the alphabet, so nothing becomes ``[UNK]``).
"""

from __future__ import annotations

WORDS = """
a about above across act action actually add address admit adult afraid after afternoon again
against age ago agree ahead air all allow almost alone along already also although always am
among amount an and anger animal another answer any anyone anything appear apple area arm army
around arrive art article as ask at attack attention aunt autumn available away baby back bad bag
ball bank bar base basket bath be bear beautiful became because become bed bedroom been beer
before began begin behind believe below best better between beyond bicycle big bird birthday bit
black blood blue board boat body bone book born borrow both bottle bottom box boy bread break
breakfast bridge bright bring brother brown build building burn bus business busy but butter buy
by cake call came camera can car card care careful carry case cat catch cause center certain
chair chance change cheap check cheese chicken child children choose church city class clean
clear climb clock close clothes cloud coat coffee cold college color come common company compare
computer condition consider continue control cook cool copy corner correct cost could count
country course cousin cover cow create cry cup cut dance dangerous dark data date daughter day
dead dear death decide deep degree describe desk detail develop did die different difficult
dinner direction dirty discover discuss do doctor does dog dollar done door down draw dream
dress drink drive drop dry during each ear early earth east easy eat edge egg eight either
electric eleven else empty end enemy energy enjoy enough enter entire equal evening event ever
every everyone everything exactly example except excited exercise expect expensive experience
explain eye face fact fall false family famous far farm fast fat father fear feel feet few field
fifteen fight fill film final find fine finger finish fire first fish five floor flower fly
follow food foot for force foreign forest forget form forty forward four fox free fresh friend
from front fruit full fun funny future game garden gate gave general get gift girl give glad
glass go goal gold gone good got government grandfather grandmother grass gray great green
ground group grow guess gun hair half hall hand happen happy hard has hat have he head health
hear heart heat heavy hello help her here high hill him his history hit hold hole holiday home
hope horse hospital hot hotel hour house how however huge human hundred hungry hurry hurt
husband i ice idea if ill important in inside instead interest into iron is island it its job
join jump jumps jumped jumping juice just keep key kill kind king kitchen knew know lady lake land
language large last late later laugh law lay lazy lead learn least leave left leg less lesson
let letter level library lie life light like line lion list listen little live long look lose
lost lot loud love low lunch machine made make man many map mark market married matter may maybe
me meal mean meat meet member memory men middle might mile milk million mind minute miss model
moment money month moon more morning most mother mountain mouse mouth move movie much music
must my name nation natural near neck need neighbor never new news next nice night nine no noise
none north nose not note nothing notice now number nurse object ocean of off offer office often
oil old on once one only open or orange order other our out outside over own page pain paint
pair paper parent park part party pass past path pay peace pen pencil people perhaps person
phone picture piece pig place plan plane plant play please pocket point police poor popular
position possible pound power practice prepare present president pretty price private problem
produce promise pull push put queen question quick quickly quiet quite rabbit race radio rain
raise ran rather reach read ready real really reason receive red remember repeat reply report
rest result return rich ride right ring river road rock room round rule run sad safe said salt
same sand save saw say school science sea season seat second secret see seem sell send sense
sentence serious seven several shall shape share she sheep ship shirt shoe shop short should
shoulder shout show sick side sign silver simple since sing sister sit six size skin sky sleep
slow small smell smile snow so soft some someone something sometimes son song soon sorry sound
soup south space speak special spend spring square stand star start station stay step still
stone stop store story strange street strong student study sugar summer sun sure surprise sweet
swim table tail take talk tall tea teach teacher team tell ten test than thank that the their
them then there these they thing think third thirty this those though thought thousand three
through throw ticket time tired to today together told tomorrow tonight too took tooth top touch
toward town toy train travel tree trip trouble true try turn twelve twenty two uncle under
understand until up upon us use useful usually valley very view village visit voice wait walk
wall want war warm was wash watch water way we wear weather week weight welcome well went were
west wet what wheel when where which while white who whole why wide wife wild will win wind
window winter wish with without woman women wonder wood word work world worry would write wrong
yard year yellow yes yesterday yet you young your zero
learning federated gradient gradients model models leakage private privacy attack attacker
server client clients update updates training network networks neural deep token tokens text
secret password bank account transfer meeting patient medical records
"""

SENTENCES = """
The quick brown fox jumps over the lazy dog.
A federated learning client shares only gradients, not its private data.
The server sends the model to every client and waits for the updates.
My password is a secret and I never tell it to anyone.
The patient saw the doctor at the hospital this morning.
We will meet at the station tomorrow at nine in the evening.
She reads a book in the garden while the children play.
He bought bread, milk and eggs at the market on the corner.
The weather was cold and wet, so they stayed at home all day.
Please send the report to the office before the end of the week.
It is important to understand how much a gradient can leak.
Deep neural networks learn from data, one small step at a time.
Our teacher told us a funny story about her first job.
The river runs through the valley to the ocean in the south.
I love to listen to music when I walk to school.
They opened a new bank account and made a transfer of money.
Time flies like an arrow; fruit flies like a banana.
The cat sat on the mat, and the dog slept by the door.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000 2024.
Questions? Answers! Lists, commas; colons: quotes "like this" and 'that' (with brackets).
"""

TEXT = WORDS + "\n" + SENTENCES
