"""Regenerate tinker_actors_public_pb2.py(+.pyi): ``python -m tinker_actors._proto.regenerate``.

Runs grpcio-tools' protoc, then drops the gencode runtime-version guard so the
committed module imports under any protobuf runtime >= 5.26 (the builder API it
uses has been stable since 3.20), not only runtimes newer than the protoc used.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    from grpc_tools import protoc

    rc: int = protoc.main(
        [
            "protoc",
            f"-I{HERE}",
            f"--python_out={HERE}",
            f"--pyi_out={HERE}",
            str(HERE / "tinker_actors_public.proto"),
        ]
    )
    if rc != 0:
        return rc
    out = HERE / "tinker_actors_public_pb2.py"
    text = out.read_text()
    text = re.sub(r"from google\.protobuf import runtime_version as _runtime_version\n", "", text)
    text = re.sub(
        r"_runtime_version\.ValidateProtobufRuntimeVersion\([^)]*\)\n", "", text, flags=re.S
    )
    out.write_text(text)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
