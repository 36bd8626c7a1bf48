"""Repository-wide pytest settings: doctests of optional integrations need their extra installed."""

import importlib.util

collect_ignore = []
if importlib.util.find_spec("flwr") is None:  # pip install 'gradleak[flower]'
    collect_ignore.append("src/gradleak/integrations/flower.py")
