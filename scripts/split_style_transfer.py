"""Split a style-transfer checkpoint into stage-1 VQGAN checkpoints, to continue training from its VQGANs.

    python scripts/split_style_transfer.py MODEL OUT_DIR

writes OUT_DIR/art.pt (the art VQGAN: encoder_real, quant_conv_real, quantize_dec, post_quant_conv, decoder,
complete) and OUT_DIR/photo.pt (the photo VQGAN's encoder side: encoder, quant_conv, quantize_enc; a stage-2
model holds no photo decoder, so the art decoder stands in for it: stage 2 reads only the encoder side).
MODEL may be `builtin` for the built-in model. The built-in model v2 was trained this way from v1's VQGANs
(docs/model-card.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

from quantart_cli.core.io.checkpoints import load_model, save_checkpoint
from quantart_cli.core.models import VQGAN
from quantart_cli.core.weights import builtin_model_path

PARTS = {
    "art": {"encoder": "encoder_real", "quant_conv": "quant_conv_real", "quantize": "quantize_dec",
            "post_quant_conv": "post_quant_conv", "decoder": "decoder"},
    "photo": {"encoder": "encoder", "quant_conv": "quant_conv", "quantize": "quantize_enc",
              "post_quant_conv": "post_quant_conv", "decoder": "decoder"},
}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    source = builtin_model_path() if argv[0] == "builtin" else Path(argv[0])
    model = load_model(source, expected_kind="style-transfer")
    out = Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for name, parts in PARTS.items():
        config = model.config.style if name == "art" else model.config.content
        vqgan = VQGAN(config)
        for target, origin in parts.items():
            getattr(vqgan, target).load_state_dict(getattr(model, origin).state_dict(), strict=True)
        path = save_checkpoint(vqgan, out / f"{name}.pt", extra={"split_from": str(source), "part": name})
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
