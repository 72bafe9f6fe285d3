"""boothwatch: watches consumption-room booths and pages a nurse in time."""

__version__ = "0.1.0"
