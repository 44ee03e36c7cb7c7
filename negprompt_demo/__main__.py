import sys

from negprompt_demo.cli import main

sys.exit(main())
