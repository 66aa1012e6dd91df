"""`python -m csms` runs the CSMS, like `evfleet csms`."""

from csms.cli import run_csms_main

if __name__ == "__main__":
    run_csms_main()
