"""Self-contained HTML: inline CSS and JavaScript, images as base64 ``data:`` URIs, no URLs.

The page opens offline from a file (no network, no external fonts or scripts); tables with
``sortable=True`` sort by a column when its header is clicked (numbers numerically, ``inf``
above every finite number, empty cells last).

Example:
    >>> html = page("t", [table_html(["a", "b"], [[1, "x"], [2, "y"]])])
    >>> html.count("<tr>"), "http" in html
    (3, False)
"""

from __future__ import annotations

import base64
import html as _html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif;margin:1.5em auto;max-width:1200px;padding:0 1em;color:#222}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
.muted{color:#666}.fail{color:#b00020}.ok{color:#0a7d28}
.shared{color:#333;background:#f6f6f6;border-left:3px solid #bbb;padding:.3em .6em;margin:.4em 0;font-size:.9em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:right;white-space:nowrap}
th{background:#f3f3f3;position:sticky;top:0}
td.t,th.t{text-align:left}
td.t{white-space:normal;overflow-wrap:anywhere;max-width:24em}
table.sortable th{cursor:pointer;user-select:none}
table.sortable th:after{content:" \\2195";color:#aaa;font-size:.8em}
table.sortable th.asc:after{content:" \\2191";color:#333}
table.sortable th.desc:after{content:" \\2193";color:#333}
tr:nth-child(even) td{background:#fafafa}
.plots img{max-width:100%;border:1px solid #eee;margin:.4em 0}
.grid{display:flex;flex-wrap:wrap;gap:10px}
.card{border:1px solid #ddd;border-radius:4px;padding:6px;font-size:.75em;width:190px}
.card .pair{display:flex;gap:4px;justify-content:center}
.card img{width:84px;height:84px;image-rendering:pixelated;object-fit:contain;background:#000}
.card img.wide{width:176px;height:auto}
.card .cap{margin-top:4px;word-break:break-all}
.scroll{overflow-x:auto;max-height:70vh}
"""

SORT_JS = """
(function(){
  function key(text){
    var t=text.trim();
    if(t===''||t==='-'||t==='nan')return {e:1,n:0,s:''};
    if(t==='inf')return {e:0,n:Infinity,s:t};
    var v=parseFloat(t.replace('%',''));
    if(!isNaN(v)&&/^[-+]?[0-9.]+(e[-+]?[0-9]+)?%?$/i.test(t))return {e:0,n:v,s:t};
    return {e:0,n:NaN,s:t.toLowerCase()};
  }
  function sortBy(table,col,dir){
    var body=table.tBodies[0];var rows=Array.prototype.slice.call(body.rows);
    rows.sort(function(a,b){
      var x=key(a.cells[col].textContent),y=key(b.cells[col].textContent);
      if(x.e!==y.e)return x.e-y.e;
      var r;
      if(!isNaN(x.n)&&!isNaN(y.n))r=(x.n===y.n)?0:(x.n<y.n?-1:1);
      else if(!isNaN(x.n))r=-1;else if(!isNaN(y.n))r=1;
      else r=x.s<y.s?-1:(x.s>y.s?1:0);
      return dir*r;
    });
    rows.forEach(function(r){body.appendChild(r);});
  }
  document.querySelectorAll('table.sortable').forEach(function(table){
    var heads=table.tHead?table.tHead.rows[0].cells:[];
    Array.prototype.forEach.call(heads,function(th,col){
      th.addEventListener('click',function(){
        var dir=th.classList.contains('asc')?-1:1;
        Array.prototype.forEach.call(heads,function(h){h.classList.remove('asc','desc');});
        th.classList.add(dir===1?'asc':'desc');
        sortBy(table,col,dir);
      });
    });
  });
})();
"""


def esc(value: Any) -> str:
    return _html.escape(str(value), quote=True)


def fmt(value: Any, digits: int = 2) -> str:
    """A table cell: floats to ``digits`` decimals, inf as ``inf``, None as empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if value != 0 and (abs(value) < 10 ** -digits or abs(value) >= 1e6):
            return f"{value:.{max(1, digits)}g}"
        return f"{value:.{digits}f}"
    return str(value)


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def img_tag(source: bytes | str | Path, alt: str, *, css_class: str | None = None, title: str | None = None) -> str:
    """An ``<img>`` with the picture embedded (PNG bytes, or a PNG file path); '' if missing."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            return ""
        data = path.read_bytes()
    else:
        data = source
    attrs = f' class="{esc(css_class)}"' if css_class else ""
    if title:
        attrs += f' title="{esc(title)}"'
    return f'<img src="{data_uri(data)}" alt="{esc(alt)}"{attrs}>'


def table_html(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    sortable: bool = True,
    text_columns: Sequence[str] = (),
    table_id: str | None = None,
    digits: int = 2,
) -> str:
    """A table with a header row; cells pass through :func:`fmt` and are escaped."""
    cls = ' class="sortable"' if sortable else ""
    ident = f' id="{esc(table_id)}"' if table_id else ""
    text = set(text_columns)
    head = "".join(f'<th class="t">{esc(c)}</th>' if c in text else f"<th>{esc(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="t">{esc(fmt(v, digits))}</td>' if c in text else f"<td>{esc(fmt(v, digits))}</td>"
            for c, v in zip(columns, row)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table{cls}{ident}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def page(title: str, sections: Sequence[str]) -> str:
    """A whole HTML document: inline CSS, the sections, then the inline sort script."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{esc(title)}</title>"
        f"<style>{CSS}</style></head><body>\n"
        + "\n".join(sections)
        + f"\n<script>{SORT_JS}</script>\n</body></html>\n"
    )
