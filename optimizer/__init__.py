"""evfleet optimizer: fleet charging schedules (Pyomo + HiGHS), baselines and the worker."""
