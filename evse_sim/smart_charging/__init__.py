"""Smart charging inside a simulated station: profiles, stacking rules and the composite schedule."""

from evfleet.profile import (
    ChargingProfile,
    ChargingSchedule,
    Kind,
    ProfileError,
    Purpose,
    RateUnit,
    Recurrency,
    SchedulePeriod,
)
from evse_sim.smart_charging.composite import (
    CompositeSchedule,
    Electrical,
    InstalledProfile,
    ProfileStore,
    SetOutcome,
    share_station_cap,
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
