"""Input limits, torch-free so the command line can show them in ``--help``."""

from __future__ import annotations

#: Images with more pixels are refused before decoding (a decompression bomb, or a declared size that would
#: exhaust memory): PIL's own hard threshold (twice ``Image.MAX_IMAGE_PIXELS``' default), about 179 megapixels.
DEFAULT_MAX_PIXELS = 2 * (1024 * 1024 * 1024 // 4 // 3)
