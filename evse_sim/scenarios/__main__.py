"""`python -m evse_sim.scenarios`: rewrite the packaged scenario files from the generators."""

from evse_sim.scenarios import write_packaged

for written in write_packaged():
    print(written)
