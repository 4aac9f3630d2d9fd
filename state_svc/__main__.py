"""`python -m state_svc`: run the service until SIGTERM."""

from servicekit.server import main
from state_svc.config import StateSettings
from state_svc.service import build

if __name__ == "__main__":
    main(StateSettings(), build, "state_svc")
