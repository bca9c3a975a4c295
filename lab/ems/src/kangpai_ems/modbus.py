"""Minimal Modbus TCP: MBAP framing, function codes 3, 4 and 6, exception responses, a blocking
client and a threaded server. Interoperable with standard Modbus TCP tools."""

from __future__ import annotations

import itertools
import logging
import socket
import socketserver
import struct
import threading
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger("kangpai_ems.modbus")

READ_HOLDING_REGISTERS = 3
READ_INPUT_REGISTERS = 4
WRITE_SINGLE_REGISTER = 6

ILLEGAL_FUNCTION = 1
ILLEGAL_DATA_ADDRESS = 2
ILLEGAL_DATA_VALUE = 3
SERVER_DEVICE_FAILURE = 4
GATEWAY_TARGET_FAILED = 11

MAX_READ_COUNT = 125  # the protocol's limit for one read of 16-bit registers
_MBAP = struct.Struct(">HHHB")  # transaction id, protocol id (0), length, unit id
_MAX_PDU = 253


class ModbusError(Exception):
    """The peer answered with a Modbus exception response."""

    def __init__(self, function: int, code: int) -> None:
        super().__init__(f"function {function}: exception code {code}")
        self.function = function
        self.code = code


class FrameError(Exception):
    """Bytes on the wire that are not a valid Modbus TCP frame or response."""


class NoResponse(Exception):  # noqa: N818 (a control-flow signal, not an error)
    """Raised by a Device to leave a request unanswered (a unit that is offline)."""


@dataclass(frozen=True)
class Frame:
    transaction_id: int
    unit_id: int
    pdu: bytes


def encode_frame(frame: Frame) -> bytes:
    if not 1 <= len(frame.pdu) <= _MAX_PDU:
        raise FrameError(f"PDU length {len(frame.pdu)} not in 1..{_MAX_PDU}")
    header = _MBAP.pack(frame.transaction_id, 0, len(frame.pdu) + 1, frame.unit_id)
    return header + frame.pdu


def decode_frame(data: bytes) -> Frame:
    if len(data) < _MBAP.size + 1:
        raise FrameError(f"frame of {len(data)} bytes is too short")
    tid, protocol, length, unit = _MBAP.unpack_from(data)
    if protocol != 0:
        raise FrameError(f"protocol id {protocol} is not Modbus (0)")
    if length != len(data) - _MBAP.size + 1:
        raise FrameError(f"MBAP length {length} does not match {len(data) - 6} bytes")
    return Frame(tid, unit, data[_MBAP.size:])


def read_frame(sock: socket.socket) -> Frame | None:
    """Read one frame; None when the peer closed the connection before a new frame."""
    header = _recv_exact(sock, _MBAP.size, allow_eof=True)
    if header is None:
        return None
    _tid, _protocol, length, _unit = _MBAP.unpack(header)
    if not 2 <= length <= _MAX_PDU + 1:
        raise FrameError(f"MBAP length {length} out of range")
    return decode_frame(header + _recv_exact(sock, length - 1))


def _recv_exact(sock: socket.socket, size: int, allow_eof: bool = False) -> bytes | None:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            if allow_eof and not chunks:
                return None
            raise FrameError("connection closed in the middle of a frame")
        chunks += chunk
    return bytes(chunks)


# --- PDUs ---------------------------------------------------------------------------------------

def read_request(function: int, address: int, count: int) -> bytes:
    if function not in (READ_HOLDING_REGISTERS, READ_INPUT_REGISTERS):
        raise ValueError(f"function {function} is not a register read")
    if not 1 <= count <= MAX_READ_COUNT:
        raise ValueError(f"count {count} not in 1..{MAX_READ_COUNT}")
    return struct.pack(">BHH", function, address, count)


def write_single_request(address: int, value: int) -> bytes:
    return struct.pack(">BHH", WRITE_SINGLE_REGISTER, address, value)


def exception_response(function: int, code: int) -> bytes:
    return struct.pack(">BB", function | 0x80, code)


def read_response(function: int, values: list[int]) -> bytes:
    return struct.pack(f">BB{len(values)}H", function, 2 * len(values), *values)


def parse_response(request: bytes, response: bytes) -> list[int]:
    """Check a response PDU against its request; the registers read (or the value written)."""
    function = request[0]
    if not response:
        raise FrameError("empty response PDU")
    if response[0] == function | 0x80:
        if len(response) != 2:
            raise FrameError("malformed exception response")
        raise ModbusError(function, response[1])
    if response[0] != function:
        raise FrameError(f"response function {response[0]} does not match request {function}")
    if function == WRITE_SINGLE_REGISTER:
        if response != request:
            raise FrameError("write response does not echo the request")
        return [struct.unpack_from(">H", response, 3)[0]]
    _, _, count = struct.unpack(">BHH", request)
    if len(response) < 2 or response[1] != 2 * count or len(response) != 2 + 2 * count:
        raise FrameError(f"read response does not carry {count} registers")
    return list(struct.unpack_from(f">{count}H", response, 2))


# --- registers across words ---------------------------------------------------------------------

def to_u32(high: int, low: int) -> int:
    return (high << 16) | low


def from_u32(value: int) -> list[int]:
    return [(value >> 16) & 0xFFFF, value & 0xFFFF]


def to_i32(high: int, low: int) -> int:
    value = to_u32(high, low)
    return value - (1 << 32) if value & 0x80000000 else value


def from_i32(value: int) -> list[int]:
    return from_u32(value & 0xFFFFFFFF)


# --- client -------------------------------------------------------------------------------------

class Client:
    """One TCP connection to a Modbus server, reopened after any failure."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._tids = itertools.cycle(range(1, 0x10000))
        self._lock = threading.Lock()

    def read_input_registers(self, unit: int, address: int, count: int) -> list[int]:
        return self.request(unit, read_request(READ_INPUT_REGISTERS, address, count))

    def read_holding_registers(self, unit: int, address: int, count: int) -> list[int]:
        return self.request(unit, read_request(READ_HOLDING_REGISTERS, address, count))

    def write_register(self, unit: int, address: int, value: int) -> None:
        self.request(unit, write_single_request(address, value))

    def request(self, unit: int, pdu: bytes) -> list[int]:
        """Send one request and wait up to `timeout` for its answer (TimeoutError if none)."""
        with self._lock:
            try:
                sock = self._connect()
                tid = next(self._tids)
                sock.sendall(encode_frame(Frame(tid, unit, pdu)))
                while True:
                    frame = read_frame(sock)
                    if frame is None:
                        raise FrameError("server closed the connection")
                    # A late answer to an earlier, timed-out request: skip it.
                    if frame.transaction_id == tid and frame.unit_id == unit:
                        return parse_response(pdu, frame.pdu)
            except ModbusError:
                raise
            except (OSError, FrameError):
                self.close()
                raise

    def _connect(self) -> socket.socket:
        if self._sock is None:
            self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            self._sock.settimeout(self.timeout)
        return self._sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- server -------------------------------------------------------------------------------------

class Device(Protocol):
    """What a server serves. Methods raise ModbusError(function, code) to answer an exception,
    NoResponse to stay silent."""

    def read(self, unit: int, function: int, address: int, count: int) -> list[int]: ...

    def write(self, unit: int, address: int, value: int) -> None: ...


def dispatch(device: Device, unit: int, pdu: bytes) -> bytes | None:
    """The response PDU for one request PDU, or None to send nothing."""
    function = pdu[0]
    try:
        if function in (READ_HOLDING_REGISTERS, READ_INPUT_REGISTERS):
            if len(pdu) != 5:
                raise ModbusError(function, ILLEGAL_DATA_VALUE)
            _, address, count = struct.unpack(">BHH", pdu)
            if not 1 <= count <= MAX_READ_COUNT:
                raise ModbusError(function, ILLEGAL_DATA_VALUE)
            return read_response(function, device.read(unit, function, address, count))
        if function == WRITE_SINGLE_REGISTER:
            if len(pdu) != 5:
                raise ModbusError(function, ILLEGAL_DATA_VALUE)
            _, address, value = struct.unpack(">BHH", pdu)
            device.write(unit, address, value)
            return pdu
        raise ModbusError(function, ILLEGAL_FUNCTION)
    except ModbusError as exc:
        return exception_response(function, exc.code)
    except NoResponse:
        return None


class Server(socketserver.ThreadingTCPServer):
    """Serve a Device on (host, port); one thread per connection, many requests each."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], device: Device) -> None:
        self.device = device
        super().__init__(address, _ConnectionHandler)


class _ConnectionHandler(socketserver.BaseRequestHandler):
    server: Server

    def handle(self) -> None:
        sock: socket.socket = self.request
        try:
            while True:
                frame = read_frame(sock)
                if frame is None:
                    return
                answer = dispatch(self.server.device, frame.unit_id, frame.pdu)
                if answer is not None:
                    sock.sendall(encode_frame(Frame(frame.transaction_id, frame.unit_id, answer)))
        except (OSError, FrameError) as exc:
            log.debug("connection from %s ended: %s", self.client_address[0], exc)
