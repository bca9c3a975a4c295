"""Switch a simulated meter's behaviour (`--mode`), or read it: prints one JSON line.

    python3 -m kangpai_ems.meter_ctl --host H --port P --unit N --mode offline|normal|stuck|...
    python3 -m kangpai_ems.meter_ctl --host H --port P --unit N     # read the measurements
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from . import meter_registers as regs
from . import modbus


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, default=502)
    parser.add_argument("--unit", type=int, required=True)
    parser.add_argument("--mode", choices=sorted(regs.MODES, key=regs.MODES.get),
                        help="switch the meter to this mode (default: read the meter)")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds (default 2)")
    args = parser.parse_args(argv)
    try:
        with modbus.Client(args.host, args.port, args.timeout) as client:
            if args.mode is not None:
                client.write_register(args.unit, regs.MODE_REGISTER, regs.MODES[args.mode])
                result = {"unit": args.unit, "mode": args.mode}
            else:
                result = {"unit": args.unit, **regs.read(client, args.unit).as_dict()}
    except TimeoutError:
        print(f"meter_ctl: unit {args.unit} at {args.host}:{args.port} did not answer",
              file=sys.stderr)
        return 1
    except (OSError, modbus.ModbusError, modbus.FrameError) as exc:
        print(f"meter_ctl: {args.host}:{args.port} unit {args.unit}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
