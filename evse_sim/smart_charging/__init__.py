"""Smart charging inside a simulated station: profiles, stacking rules and the composite schedule."""

from evse_sim.smart_charging.composite import (
    CompositeSchedule,
    Electrical,
    InstalledProfile,
    ProfileStore,
    SetOutcome,
    share_station_cap,
)
from evse_sim.smart_charging.profiles import (
    ChargingProfile,
    ChargingSchedule,
    Kind,
    ProfileError,
    Purpose,
    RateUnit,
    Recurrency,
    SchedulePeriod,
)

__all__ = [
    "ChargingProfile",
    "ChargingSchedule",
    "CompositeSchedule",
    "Electrical",
    "InstalledProfile",
    "Kind",
    "ProfileError",
    "ProfileStore",
    "Purpose",
    "RateUnit",
    "Recurrency",
    "SchedulePeriod",
    "SetOutcome",
    "share_station_cap",
]
