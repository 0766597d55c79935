#!/usr/bin/env python
"""Serve a model over HTTP: OpenAI-compatible POST /v1/audio/speech (streams), saved voices, a web page at /.

    python scripts/serve.py --checkpoint runs/demo/train/export --host 127.0.0.1 --port 8000

Without --checkpoint it serves models/default. `python scripts/serve.py --help` lists the limits (batch size,
queue, upload size). The code lives in serving/ (serving/cli.py is this command).
"""

from __future__ import annotations

import sys

from serving.cli import main

if __name__ == "__main__":
    sys.exit(main())
