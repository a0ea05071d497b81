"""Input limits, torch-free so the command line can show them in ``--help`` and check them in settings."""

from __future__ import annotations

import re

#: Images with more pixels are refused before decoding (a decompression bomb, or a declared size that would
#: exhaust memory): PIL's own hard threshold (twice ``Image.MAX_IMAGE_PIXELS``' default), about 179 megapixels.
DEFAULT_MAX_PIXELS = 2 * (1024 * 1024 * 1024 // 4 // 3)


_WEB_ADDRESS = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")


def is_web_address(text: str) -> bool:
    """Whether ``text`` is a URL (``https://...``, ``s3://...``) rather than a path: quantart reads local files only,
    and as a path a URL loses one of its slashes (``https:/...``), which no message should show."""
    return bool(_WEB_ADDRESS.match(text))


def web_address_sentence(text: str) -> str:
    """Why a URL given as an input is refused, and what to do instead."""
    return (f"{text} is a web address; quantart reads files on this computer only, so download it first "
            "(for example with curl -O) and give the file")
