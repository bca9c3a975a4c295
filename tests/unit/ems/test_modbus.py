"""Modbus TCP codec, client and server (in process, over real loopback TCP)."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator

import pytest
from kangpai_ems import meter_registers, modbus


@pytest.mark.parametrize("unit", [0, 1, 247, 255])
@pytest.mark.parametrize("pdu", [
    modbus.read_request(modbus.READ_HOLDING_REGISTERS, 0, 1),
    modbus.read_request(modbus.READ_INPUT_REGISTERS, 0xFFFF, 125),
    modbus.write_single_request(100, 0xFFFF),
    modbus.exception_response(modbus.READ_INPUT_REGISTERS, modbus.ILLEGAL_DATA_ADDRESS),
])
def test_frame_round_trip(pdu: bytes, unit: int) -> None:
    frame = modbus.Frame(0xBEEF, unit, pdu)
    assert modbus.decode_frame(modbus.encode_frame(frame)) == frame


def test_frame_bytes_follow_the_spec() -> None:
    # Read 2 input registers at 0x0010 from unit 17, transaction 1 (Modbus TCP spec example).
    wire = modbus.encode_frame(modbus.Frame(1, 17, modbus.read_request(4, 0x10, 2)))
    assert wire == bytes.fromhex("0001 0000 0006 11 04 0010 0002")


def test_read_response_round_trip() -> None:
    request = modbus.read_request(modbus.READ_INPUT_REGISTERS, 0, 3)
    response = modbus.read_response(modbus.READ_INPUT_REGISTERS, [1, 0x8000, 0xFFFF])
    assert response == bytes.fromhex("04 06 0001 8000 FFFF")
    assert modbus.parse_response(request, response) == [1, 0x8000, 0xFFFF]


def test_write_response_must_echo_request() -> None:
    request = modbus.write_single_request(100, 3)
    assert modbus.parse_response(request, request) == [3]
    with pytest.raises(modbus.FrameError):
        modbus.parse_response(request, modbus.write_single_request(100, 4))


def test_exception_response_raises_with_code() -> None:
    request = modbus.read_request(modbus.READ_HOLDING_REGISTERS, 9, 1)
    response = modbus.exception_response(modbus.READ_HOLDING_REGISTERS,
                                         modbus.ILLEGAL_DATA_ADDRESS)
    assert response == b"\x83\x02"
    with pytest.raises(modbus.ModbusError) as caught:
        modbus.parse_response(request, response)
    assert (caught.value.function, caught.value.code) == (3, 2)


@pytest.mark.parametrize(("data", "problem"), [
    (bytes.fromhex("0001 0001 0006 11 04 0010 0002"), "protocol id"),
    (bytes.fromhex("0001 0000 0009 11 04 0010 0002"), "length"),
    (bytes.fromhex("0001 0000"), "short"),
])
def test_bad_frames_are_rejected(data: bytes, problem: str) -> None:
    with pytest.raises(modbus.FrameError, match=problem):
        modbus.decode_frame(data)


def test_response_with_wrong_register_count_is_rejected() -> None:
    request = modbus.read_request(modbus.READ_INPUT_REGISTERS, 0, 2)
    with pytest.raises(modbus.FrameError):
        modbus.parse_response(request, modbus.read_response(4, [1]))


@pytest.mark.parametrize("value", [0, 1, 0x7FFFFFFF, -1, -(2**31)])
def test_int32_word_round_trip(value: int) -> None:
    assert modbus.to_i32(*modbus.from_i32(value)) == value


def test_measurement_registers_round_trip() -> None:
    registers = meter_registers.encode(123456.78, 231.4, 57.25, -12.5)
    assert len(registers) == meter_registers.MEASUREMENT_COUNT
    decoded = meter_registers.decode(registers)
    assert decoded.kwh == pytest.approx(123456.78, abs=0.01)
    assert (decoded.voltage, decoded.current, decoded.power) == (231.4, 57.25, -12.5)


class Registers:
    """A device with 10 holding registers; unit 9 never answers."""

    def __init__(self) -> None:
        self.values = list(range(100, 110))

    def read(self, unit: int, function: int, address: int, count: int) -> list[int]:
        if unit == 9:
            raise modbus.NoResponse
        if address + count > len(self.values):
            raise modbus.ModbusError(function, modbus.ILLEGAL_DATA_ADDRESS)
        return self.values[address:address + count]

    def write(self, unit: int, address: int, value: int) -> None:
        if address >= len(self.values):
            raise modbus.ModbusError(modbus.WRITE_SINGLE_REGISTER, modbus.ILLEGAL_DATA_ADDRESS)
        self.values[address] = value


@pytest.fixture
def server() -> Iterator[modbus.Server]:
    srv = modbus.Server(("127.0.0.1", 0), Registers())
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_client_reads_and_writes_over_tcp(server: modbus.Server) -> None:
    with modbus.Client("127.0.0.1", server.server_address[1], timeout=2) as client:
        assert client.read_holding_registers(1, 2, 3) == [102, 103, 104]
        client.write_register(1, 4, 4242)
        assert client.read_input_registers(1, 4, 1) == [4242]


def test_client_gets_exception_responses(server: modbus.Server) -> None:
    with modbus.Client("127.0.0.1", server.server_address[1], timeout=2) as client:
        with pytest.raises(modbus.ModbusError) as caught:
            client.read_holding_registers(1, 8, 5)
        assert caught.value.code == modbus.ILLEGAL_DATA_ADDRESS
        # the connection stays usable after an exception response
        assert client.read_holding_registers(1, 0, 1) == [100]


def test_server_answers_unknown_function_with_exception(server: modbus.Server) -> None:
    with socket.create_connection(server.server_address, timeout=2) as sock:
        sock.sendall(modbus.encode_frame(modbus.Frame(7, 1, b"\x2b\x0e\x01\x00")))
        frame = modbus.read_frame(sock)
    assert frame == modbus.Frame(7, 1, bytes([0x2B | 0x80, modbus.ILLEGAL_FUNCTION]))


def test_server_rejects_count_over_protocol_limit(server: modbus.Server) -> None:
    with socket.create_connection(server.server_address, timeout=2) as sock:
        sock.sendall(modbus.encode_frame(modbus.Frame(8, 1, struct.pack(">BHH", 3, 0, 126))))
        frame = modbus.read_frame(sock)
    assert frame.pdu == bytes([0x83, modbus.ILLEGAL_DATA_VALUE])


def test_silent_unit_times_out_and_client_recovers(server: modbus.Server) -> None:
    with modbus.Client("127.0.0.1", server.server_address[1], timeout=0.3) as client:
        with pytest.raises(TimeoutError):
            client.read_holding_registers(9, 0, 1)
        assert client.read_holding_registers(1, 0, 2) == [100, 101]
