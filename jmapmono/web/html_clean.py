"""Mail HTML made safe to show: nh3 (ammonia) with an allow-list, before the page's sandboxed frame.

Kept: text formatting, tables, links and images. Removed: every script, event handler, form, frame,
object, SVG/MathML, ``<style>``/``<link>``/``<meta>``/``<base>`` and comment. URLs: links only ``http``,
``https`` and ``mailto`` (they get ``target=_blank`` and ``rel="noopener noreferrer"``);
images only inline ``data:image/{png,gif,jpeg,webp}``, ``cid:`` (resolved by the page from the message's
own parts), and remote ``http(s)`` only when the reader allowed remote images (otherwise a transparent
placeholder, counted); relative URLs are dropped (they would resolve against the server). ``style``
attributes keep only properties that cannot name a URL, so mail CSS never fetches anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import nh3

#: A transparent 1×1 GIF standing in for a blocked remote image (keeps its width and height).
PLACEHOLDER = "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"

_EXTRA_TAGS = {"font", "tfoot", "big", "section", "main", "address", "label"}
_TAGS = (set(nh3.ALLOWED_TAGS) | _EXTRA_TAGS) - {"area", "map"}
_DROP_WITH_CONTENT = {
    "script",
    "style",
    "title",
    "head",
    "template",
    "noscript",
    "iframe",
    "frame",
    "frameset",
    "object",
    "embed",
    "applet",
    "svg",
    "math",
    "textarea",
    "select",
    "button",
    "xmp",
    "noembed",
    "noframes",
}
_GENERIC = {"style", "title", "lang", "dir", "align", "valign", "width", "height", "bgcolor", "class"}
_ATTRIBUTES: dict[str, set[str]] = {tag: set(attrs) for tag, attrs in nh3.ALLOWED_ATTRIBUTES.items()}
_ATTRIBUTES["*"] = _GENERIC
_ATTRIBUTES.setdefault("a", set()).update({"href", "name"})
_ATTRIBUTES["a"].discard("hreflang")
_ATTRIBUTES.setdefault("img", set()).update({"src", "alt", "border"})
_ATTRIBUTES["font"] = {"color", "face", "size"}
_ATTRIBUTES.setdefault("table", set()).update({"border", "cellpadding", "cellspacing"})
for _cell in ("td", "th"):
    _ATTRIBUTES.setdefault(_cell, set()).update({"nowrap"})

#: CSS properties kept in ``style`` attributes: none of them takes a url() (background-image, list-style,
#: content, cursor, border-image, mask and filter are left out on purpose).
STYLE_PROPERTIES = {
    "color",
    "background-color",
    "font",
    "font-family",
    "font-size",
    "font-style",
    "font-weight",
    "font-variant",
    "line-height",
    "letter-spacing",
    "text-align",
    "text-decoration",
    "text-indent",
    "text-transform",
    "white-space",
    "word-break",
    "word-wrap",
    "overflow-wrap",
    "vertical-align",
    "direction",
    "width",
    "max-width",
    "min-width",
    "height",
    "max-height",
    "min-height",
    "margin",
    "margin-top",
    "margin-right",
    "margin-bottom",
    "margin-left",
    "padding",
    "padding-top",
    "padding-right",
    "padding-bottom",
    "padding-left",
    "border",
    "border-top",
    "border-right",
    "border-bottom",
    "border-left",
    "border-color",
    "border-style",
    "border-width",
    "border-radius",
    "border-collapse",
    "border-spacing",
    "display",
    "float",
    "clear",
    "table-layout",
}
_FETCHES = re.compile(r"url\s*\(|image-set\s*\(|expression\s*\(|@import|\\", re.I)
_INLINE_IMAGE_PREFIXES = tuple(f"data:image/{kind};" for kind in ("png", "gif", "jpeg", "jpg", "webp"))


@dataclass(frozen=True)
class CleanHtml:
    html: str
    #: Remote images replaced by the placeholder (0 when remote images were allowed).
    blocked_images: int


def _is_remote(value: str) -> bool:
    lowered = value.strip().lower()
    return lowered.startswith(("http://", "https://", "//"))


def clean_html(html: str, allow_remote_images: bool = False) -> CleanHtml:
    """``html`` (a whole message part) reduced to what the reading frame may show."""
    blocked = 0

    def keep(tag: str, attr: str, value: str) -> str | None:
        nonlocal blocked
        if attr == "href":
            lowered = value.strip().lower()
            if lowered.startswith(("http://", "https://", "mailto:")):
                return value
            return None
        if attr == "src":
            if tag != "img":
                return None
            lowered = value.strip().lower()
            if lowered.startswith(_INLINE_IMAGE_PREFIXES) or lowered.startswith("cid:"):
                return value
            if _is_remote(value):
                if allow_remote_images and not lowered.startswith("//"):
                    return value
                blocked += 1
                return PLACEHOLDER
            return None
        if attr == "style":  # declarations naming a resource go whole; nh3 then keeps STYLE_PROPERTIES
            value = ";".join(d for d in value.split(";") if not _FETCHES.search(d))
        elif _FETCHES.search(value):
            return None
        return value

    cleaned = nh3.clean(
        html,
        tags=_TAGS,
        clean_content_tags=_DROP_WITH_CONTENT,
        attributes=_ATTRIBUTES,
        attribute_filter=keep,
        strip_comments=True,
        link_rel="noopener noreferrer",
        set_tag_attribute_values={"a": {"target": "_blank"}},
        url_schemes={"http", "https", "mailto", "cid", "data"},
        filter_style_properties=STYLE_PROPERTIES,
        url_relative="deny",
    )
    return CleanHtml(cleaned, blocked)
