import sys

from .cli import main
from .setup_check import main as check_setup

sys.exit(check_setup(sys.argv[2:]) if sys.argv[1:2] == ["check-setup"] else main())
