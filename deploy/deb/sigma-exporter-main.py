"""The .deb bundle's entry point: the same `main` as the wheel's `sigma-exporter` script."""

import sys

from sigma_exporter.cli import main

sys.exit(main())
