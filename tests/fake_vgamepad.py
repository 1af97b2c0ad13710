"""A test double of vgamepad's `VX360Gamepad` that records the reports it would send.

This kernel has no /dev/uinput and Linux has no ViGEmBus, so the real pad cannot exist in
tests. The double keeps vgamepad's report fields and its float -> integer conversions
(`round(v * 255)` for triggers, `round(v * 32767)` for sticks, as vgamepad/api.py does), so
what it records is what the driver would receive. Loaded by the backends through the
option `gamepad = "tests.fake_vgamepad:RecordingX360Gamepad"`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Report:
    """XUSB_REPORT: what an Xbox 360 pad sends (stick -32768..32767, triggers 0..255)."""

    wButtons: int = 0
    bLeftTrigger: int = 0
    bRightTrigger: int = 0
    sThumbLX: int = 0
    sThumbLY: int = 0
    sThumbRX: int = 0
    sThumbRY: int = 0


def _check(value: int, low: int, high: int, field: str) -> int:
    if not low <= value <= high:  # ctypes would silently wrap: catch it in tests instead
        raise OverflowError(f"{field}={value} outside [{low}, {high}]")
    return value


class RecordingX360Gamepad:
    """Same public methods as vgamepad.VX360Gamepad; `reports` holds every update()."""

    instances: list[RecordingX360Gamepad] = []

    def __init__(self) -> None:
        self.report = Report()
        self.reports: list[Report] = []
        RecordingX360Gamepad.instances.append(self)
        self.update()

    def reset(self) -> None:
        self.report = Report()

    def press_button(self, button: int) -> None:
        self.report = replace(self.report, wButtons=self.report.wButtons | button)

    def release_button(self, button: int) -> None:
        self.report = replace(self.report, wButtons=self.report.wButtons & ~button)

    def left_trigger(self, value: int) -> None:
        self.report = replace(self.report, bLeftTrigger=_check(value, 0, 255, "bLeftTrigger"))

    def right_trigger(self, value: int) -> None:
        self.report = replace(self.report, bRightTrigger=_check(value, 0, 255, "bRightTrigger"))

    def left_trigger_float(self, value_float: float) -> None:
        self.left_trigger(round(value_float * 255))

    def right_trigger_float(self, value_float: float) -> None:
        self.right_trigger(round(value_float * 255))

    def left_joystick(self, x_value: int, y_value: int) -> None:
        self.report = replace(
            self.report,
            sThumbLX=_check(x_value, -32768, 32767, "sThumbLX"),
            sThumbLY=_check(y_value, -32768, 32767, "sThumbLY"),
        )

    def right_joystick(self, x_value: int, y_value: int) -> None:
        self.report = replace(
            self.report,
            sThumbRX=_check(x_value, -32768, 32767, "sThumbRX"),
            sThumbRY=_check(y_value, -32768, 32767, "sThumbRY"),
        )

    def left_joystick_float(self, x_value_float: float, y_value_float: float) -> None:
        self.left_joystick(round(x_value_float * 32767), round(y_value_float * 32767))

    def right_joystick_float(self, x_value_float: float, y_value_float: float) -> None:
        self.right_joystick(round(x_value_float * 32767), round(y_value_float * 32767))

    def update(self) -> None:
        self.reports.append(self.report)
