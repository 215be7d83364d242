"""`python -m keras_deeplab` runs the command line."""

import sys

from keras_deeplab.cli import main

sys.exit(main())
