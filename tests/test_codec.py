"""The protocol codec: records to bytes and back, and what it refuses."""

from __future__ import annotations

import json
import math
from contextlib import suppress
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

import rolecall.hooks_protocol as hp
from rolecall.hooks_protocol import (
    DEFAULT_HOOK_TIMEOUTS,
    MAX_PAYLOAD_BYTES,
    MAX_RESULT_BYTES,
    Encoding,
    ExitClass,
    HookName,
    HookPayload,
    HookResult,
    MemberInfo,
    MemberStatus,
    MessageDecodeError,
    MessageTooLargeError,
    Plan,
    ProtocolError,
    ProtocolVersionError,
    Role,
    Topology,
    _codec,
    decode_payload,
    decode_result,
    encode_payload,
    encode_result,
    payload_to_wire,
    plan_from_data,
    plan_to_data,
    status_from_data,
    status_to_data,
)

DOC = Path(__file__).resolve().parents[1] / "docs" / "hooks-protocol.md"

# -- strategies -------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
plain = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
plain_maps = st.dictionaries(st.text(max_size=8), plain, max_size=5)
members = st.builds(
    MemberInfo,
    id=st.text(min_size=1, max_size=12),
    role=st.none() | st.sampled_from(Role),
    address=st.text(max_size=24),
    epoch=st.integers(min_value=0, max_value=2**63 - 1),
)
payloads = st.builds(
    HookPayload,
    hook=st.sampled_from(HookName),
    service=st.text(max_size=12),
    member=members,
    members=st.lists(members, max_size=4).map(tuple),
    config=plain_maps,
    env=st.dictionaries(st.text(max_size=8), st.text(max_size=16), max_size=4),
    request=plain_maps,
)
results = st.builds(HookResult, data=plain_maps, message=st.text(max_size=40))
plans = st.builds(
    Plan,
    roles=st.frozensets(st.sampled_from(Role), min_size=1),
    topologies=st.frozensets(st.sampled_from(Topology), min_size=1),
    behaviours=st.frozensets(st.text(min_size=1, max_size=12), max_size=3),
    ports=st.lists(st.integers(min_value=1, max_value=65535), max_size=3).map(tuple),
    data_paths=st.lists(st.text(max_size=12).map(lambda path: "/" + path)).map(tuple),
    timeouts=st.dictionaries(
        st.sampled_from(HookName), st.floats(min_value=0.001, max_value=1e6)
    ),
)
statuses = st.builds(
    MemberStatus,
    role=st.none() | st.sampled_from(Role),
    healthy=st.booleans(),
    replication_offset=st.integers(min_value=0, max_value=2**63 - 1),
    link_up=st.none() | st.booleans(),
    epoch=st.integers(min_value=0, max_value=2**63 - 1),
    details=plain_maps,
)
encodings = st.sampled_from(Encoding)


def cache_member(epoch: int = 3) -> MemberInfo:
    """Build the member the examples below use."""
    return MemberInfo(
        id="cache-1", role=Role.REPLICA, address="cache-1:6379", epoch=epoch
    )


def role_payload() -> HookPayload:
    """Build the ``role`` payload the protocol document shows."""
    primary = MemberInfo(
        id="cache-0", role=Role.PRIMARY, address="cache-0:6379", epoch=3
    )
    return HookPayload(
        hook=HookName.ROLE,
        service="cache",
        member=cache_member(),
        members=(primary, cache_member()),
        config={"maxmemory": "64mb"},
        env={"REDIS_PASSWORD": "hunter2"},
        request={"role": "replica", "primary": "cache-0", "epoch": 3},
    )


def pack(wire: Any, encoding: Encoding) -> bytes:
    """Encode a hand-made wire value without going through the codec."""
    if encoding == Encoding.JSON:
        return json.dumps(wire).encode()

    return bytes(msgpack.packb(wire))


def payload_wire(**changes: Any) -> dict[str, Any]:
    """Return the example payload's wire map with some keys changed."""
    wire = payload_to_wire(role_payload())
    wire.update(changes)
    return wire


# -- round trips ------------------------------------------------------------


class TestRoundTrips:
    """Every record survives encode then decode, in both encodings."""

    @given(payload=payloads, encoding=encodings)
    def test_payload(self, payload: HookPayload, encoding: Encoding) -> None:
        """A payload decodes to an equal payload."""
        data = encode_payload(payload, encoding)
        assert decode_payload(data, encoding) == payload

    @given(result=results, encoding=encodings)
    def test_result(self, result: HookResult, encoding: Encoding) -> None:
        """A result decodes to an equal result."""
        assert decode_result(encode_result(result, encoding), encoding) == result

    @given(plan=plans, encoding=encodings)
    def test_plan(self, plan: Plan, encoding: Encoding) -> None:
        """A plan carried as a result's data reads back as an equal plan."""
        data = encode_result(HookResult(data=plan_to_data(plan)), encoding)
        assert plan_from_data(decode_result(data, encoding).data) == plan

    @given(status=statuses, encoding=encodings)
    def test_status(self, status: MemberStatus, encoding: Encoding) -> None:
        """A status carried as a result's data reads back as an equal status."""
        data = encode_result(HookResult(data=status_to_data(status)), encoding)
        assert status_from_data(decode_result(data, encoding).data) == status


# -- wire shapes ------------------------------------------------------------


class TestWireShapes:
    """The maps on the wire are the ones the protocol document shows."""

    def test_payload_wire(self) -> None:
        """A payload becomes the documented map of plain values."""
        wire = payload_to_wire(role_payload())
        assert wire == {
            "protocol": 1,
            "hook": "role",
            "service": "cache",
            "member": {
                "id": "cache-1",
                "role": "replica",
                "address": "cache-1:6379",
                "epoch": 3,
            },
            "members": [
                {
                    "id": "cache-0",
                    "role": "primary",
                    "address": "cache-0:6379",
                    "epoch": 3,
                },
                {
                    "id": "cache-1",
                    "role": "replica",
                    "address": "cache-1:6379",
                    "epoch": 3,
                },
            ],
            "config": {"maxmemory": "64mb"},
            "env": {"REDIS_PASSWORD": "hunter2"},
            "request": {"role": "replica", "primary": "cache-0", "epoch": 3},
        }
        assert type(wire["hook"]) is str
        assert type(wire["member"]["role"]) is str

    def test_result_wire(self) -> None:
        """A result becomes protocol, data and message."""
        data = encode_result(HookResult(data={"a": 1}, message="ok"), Encoding.JSON)
        assert json.loads(data) == {"protocol": 1, "data": {"a": 1}, "message": "ok"}

    def test_plan_data(self) -> None:
        """A plan becomes sorted lists and a timeouts map keyed by hook name."""
        plan = Plan(
            roles=frozenset({Role.REPLICA, Role.PRIMARY, Role.STANDALONE}),
            topologies=frozenset({Topology.STANDALONE, Topology.REDUNDANT}),
            behaviours=frozenset({"migratable"}),
            ports=(6379,),
            data_paths=("/data",),
            timeouts={HookName.ROLE: 60.0},
            moves=frozenset({"replication", "export"}),
        )
        assert plan_to_data(plan) == {
            "roles": ["primary", "replica", "standalone"],
            "topologies": ["redundant", "standalone"],
            "behaviours": ["migratable"],
            "ports": [6379],
            "data_paths": ["/data"],
            "timeouts": {"role": 60.0},
            "moves": ["export", "replication"],
        }
        assert plan_from_data(plan_to_data(plan)) == plan

    def test_status_data(self) -> None:
        """A status becomes the documented map."""
        status = MemberStatus(
            role=Role.PRIMARY, healthy=True, replication_offset=123, epoch=3
        )
        assert status_to_data(status) == {
            "role": "primary",
            "healthy": True,
            "replication_offset": 123,
            "link_up": None,
            "epoch": 3,
            "details": {},
        }

    def test_minimal_plan(self) -> None:
        """A plan needs only roles and topologies; the rest defaults."""
        plan = plan_from_data({"roles": ["standalone"], "topologies": ["standalone"]})
        assert plan == Plan(
            roles=frozenset({Role.STANDALONE}),
            topologies=frozenset({Topology.STANDALONE}),
        )

    def test_integer_timeouts(self) -> None:
        """Whole-second timeouts read as floats."""
        plan = plan_from_data(
            {"roles": ["primary"], "topologies": ["redundant"], "timeouts": {"role": 5}}
        )
        assert plan.timeouts == {HookName.ROLE: 5.0}


# -- results from hooks -----------------------------------------------------


class TestDecodeResult:
    """What a hook prints is read leniently where safe and strictly elsewhere."""

    @pytest.mark.parametrize("encoding", list(Encoding))
    def test_empty_output(self, encoding: Encoding) -> None:
        """A hook that prints nothing answered an empty result."""
        assert decode_result(b"", encoding) == HookResult()

    def test_blank_json_output(self) -> None:
        """Only white space from a JSON hook is an empty result too."""
        assert decode_result(b" \n", Encoding.JSON) == HookResult()

    @pytest.mark.parametrize("encoding", list(Encoding))
    def test_unknown_keys(self, encoding: Encoding) -> None:
        """Keys a newer hook adds are ignored."""
        wire = {"protocol": 1, "data": {"x": 1}, "message": "", "trace": "abc"}
        assert decode_result(pack(wire, encoding), encoding).data == {"x": 1}

    def test_null_data_and_message(self) -> None:
        """Null data and message read as their defaults."""
        data = pack({"protocol": 1, "data": None, "message": None}, Encoding.JSON)
        assert decode_result(data, Encoding.JSON) == HookResult()

    @pytest.mark.parametrize(
        "value",
        [
            pytest.param(b"x", id="bin"),
            pytest.param(b"", id="empty-bin"),
            pytest.param(msgpack.ExtType(5, b"abc"), id="ext"),
            pytest.param(msgpack.ExtType(5, b""), id="empty-ext"),
            pytest.param(msgpack.Timestamp(1, 0), id="timestamp"),
        ],
    )
    def test_refuses_non_json_values(self, value: object) -> None:
        """msgpack values JSON cannot hold are refused."""
        data = msgpack.packb({"protocol": 1, "data": {"nested": [value]}})
        with pytest.raises(MessageDecodeError):
            decode_result(data)

    def test_refuses_non_string_key(self) -> None:
        """A map key that is not a string is refused."""
        data = msgpack.packb({"protocol": 1, "data": {"a": {b"": 1}}})
        with pytest.raises(MessageDecodeError, match=r"result\.data key"):
            decode_result(data)

    @pytest.mark.parametrize("encoding", list(Encoding))
    def test_not_a_map(self, encoding: Encoding) -> None:
        """A result that is not a map is refused."""
        with pytest.raises(MessageDecodeError, match="must be a map"):
            decode_result(pack([1, 2], encoding), encoding)

    def test_message_not_a_string(self) -> None:
        """A message that is not a string is refused, naming the field."""
        data = pack({"protocol": 1, "message": 3}, Encoding.JSON)
        with pytest.raises(MessageDecodeError, match=r"result\.message"):
            decode_result(data, Encoding.JSON)

    def test_deep_json(self) -> None:
        """JSON nested past the interpreter's stack is a decode error."""
        data = b'{"protocol":1,"data":{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
        with pytest.raises(MessageDecodeError):
            decode_result(data, Encoding.JSON)

    def test_deep_msgpack(self) -> None:
        """msgpack nested past the decoder's stack is a decode error."""
        with pytest.raises(MessageDecodeError):
            decode_result(b"\x91" * 100_000 + b"\xc0")

    def test_array_bomb(self) -> None:
        """A header that claims four billion items fails without allocating."""
        with pytest.raises(MessageDecodeError):
            decode_result(b"\x81\xa4data\xdd\xff\xff\xff\xff")


# -- limits -----------------------------------------------------------------


class TestLimits:
    """Messages over the protocol's sizes are refused both ways."""

    @pytest.mark.parametrize("encoding", list(Encoding))
    def test_encode_large_payload(self, encoding: Encoding) -> None:
        """A payload that encodes past the limit raises with its size."""
        payload = HookPayload(
            hook=HookName.CONFIGURE,
            service="cache",
            member=cache_member(),
            config={"blob": "x" * MAX_PAYLOAD_BYTES},
        )
        with pytest.raises(MessageTooLargeError) as caught:
            encode_payload(payload, encoding)

        assert caught.value.limit == MAX_PAYLOAD_BYTES
        assert caught.value.size > MAX_PAYLOAD_BYTES

    def test_decode_large_payload(self) -> None:
        """Bytes past the payload limit are refused before decoding."""
        with pytest.raises(MessageTooLargeError):
            decode_payload(b"\xc0" * (MAX_PAYLOAD_BYTES + 1))

    def test_encode_large_result(self) -> None:
        """A result that encodes past the limit raises."""
        result = HookResult(data={"blob": "x" * MAX_RESULT_BYTES})
        with pytest.raises(MessageTooLargeError):
            encode_result(result)

    def test_decode_large_result(self) -> None:
        """Output past the result limit is refused before decoding."""
        with pytest.raises(MessageTooLargeError) as caught:
            decode_result(b" " * (MAX_RESULT_BYTES + 1), Encoding.JSON)

        assert caught.value.size == MAX_RESULT_BYTES + 1

    def test_payload_at_limit(self) -> None:
        """A payload just under the limit still goes through."""
        payload = HookPayload(
            hook=HookName.CONFIGURE,
            service="cache",
            member=cache_member(),
            config={"blob": "x" * (MAX_PAYLOAD_BYTES - 200)},
        )
        assert decode_payload(encode_payload(payload)) == payload


# -- versions ---------------------------------------------------------------


class TestVersion:
    """Only protocol 1 is spoken; anything else says so."""

    @pytest.mark.parametrize("version", [0, 2, "1", 1.0, True, None])
    @pytest.mark.parametrize("encoding", list(Encoding))
    def test_payload_version(self, version: object, encoding: Encoding) -> None:
        """A payload of another version raises with the version seen."""
        data = pack(payload_wire(protocol=version), encoding)
        with pytest.raises(ProtocolVersionError) as caught:
            decode_payload(data, encoding)

        assert caught.value.version == version

    def test_result_version(self) -> None:
        """A result of another version raises with the version seen."""
        with pytest.raises(ProtocolVersionError) as caught:
            decode_result(msgpack.packb({"protocol": 2, "data": {}}))

        assert caught.value.version == 2

    @pytest.mark.parametrize("encoding", list(Encoding))
    def test_missing_version(self, encoding: Encoding) -> None:
        """A message without a version is a decode error naming the key."""
        with pytest.raises(MessageDecodeError, match="'protocol'"):
            decode_result(pack({"data": {}}, encoding), encoding)


# -- missing keys and bad fields ----------------------------------------------


class TestBadFields:
    """Errors name the key or field that is wrong."""

    @pytest.mark.parametrize("key", ["hook", "service", "member"])
    def test_payload_missing_key(self, key: str) -> None:
        """A payload without a required key names it."""
        wire = payload_wire()
        del wire[key]
        with pytest.raises(MessageDecodeError, match=f"'{key}'"):
            decode_payload(pack(wire, Encoding.MSGPACK))

    @pytest.mark.parametrize("key", ["id", "role", "address"])
    def test_member_missing_key(self, key: str) -> None:
        """A member without a required key names the member and the key."""
        wire = payload_wire()
        del wire["members"][1][key]
        with pytest.raises(MessageDecodeError, match=rf"members\[1\].*'{key}'"):
            decode_payload(pack(wire, Encoding.MSGPACK))

    def test_optional_keys(self) -> None:
        """A payload may leave out every key whose field has a default."""
        wire = {
            "protocol": 1,
            "hook": "status",
            "service": "cache",
            "member": {"id": "cache-1", "role": None, "address": "cache-1:6379"},
        }
        payload = decode_payload(pack(wire, Encoding.JSON), Encoding.JSON)
        assert payload.member.epoch == 0
        assert payload.members == ()
        assert payload.config == {}

    @pytest.mark.parametrize(
        ("changes", "field"),
        [
            ({"hook": "reboot"}, "payload.hook"),
            ({"hook": ["role"]}, "payload.hook"),
            ({"service": 7}, "payload.service"),
            ({"members": {}}, "payload.members"),
            ({"members": [1]}, r"payload.members\[0\]"),
            ({"config": []}, "payload.config"),
            ({"request": "x"}, "payload.request"),
            ({"member": "cache-1"}, "payload.member"),
        ],
    )
    def test_payload_bad_field(self, changes: dict[str, Any], field: str) -> None:
        """A payload field of the wrong shape is named in the error."""
        with pytest.raises(MessageDecodeError, match=field):
            decode_payload(pack(payload_wire(**changes), Encoding.MSGPACK))

    @pytest.mark.parametrize(
        ("key", "value"),
        [
            ("epoch", -1),
            ("epoch", 2**63),
            ("epoch", 1.5),
            ("epoch", "3"),
            ("role", "leader"),
            ("id", 1),
            ("address", None),
        ],
    )
    def test_member_bad_field(self, key: str, value: object) -> None:
        """A member field of the wrong shape is named in the error."""
        wire = payload_wire()
        wire["member"][key] = value
        with pytest.raises(MessageDecodeError, match=rf"payload\.member\.{key}"):
            decode_payload(pack(wire, Encoding.MSGPACK))

    def test_bool_epoch_after_int_epoch(self) -> None:
        """An epoch of true is refused even right after the same member with 1."""
        earlier = HookPayload(
            hook=HookName.STATUS, service="cache", member=cache_member(epoch=1)
        )
        decode_payload(encode_payload(earlier))
        wire = payload_wire()
        wire["member"]["epoch"] = True
        with pytest.raises(MessageDecodeError, match="epoch"):
            decode_payload(pack(wire, Encoding.MSGPACK))

    def test_env_secret_not_shown(self) -> None:
        """A bad env value is named by key, never shown."""
        wire = payload_wire(env={"REDIS_PASSWORD": 84021779})
        with pytest.raises(MessageDecodeError, match="REDIS_PASSWORD") as caught:
            decode_payload(pack(wire, Encoding.MSGPACK))

        assert "84021779" not in str(caught.value)

    def test_long_value_trimmed(self) -> None:
        """A long bad value is cut short in the message."""
        with pytest.raises(MessageDecodeError) as caught:
            decode_payload(
                pack(payload_wire(service=["x" * 10_000]), Encoding.JSON), Encoding.JSON
            )

        assert len(str(caught.value)) < 300

    @pytest.mark.parametrize(
        ("changes", "field"),
        [
            ({"roles": []}, "plan.roles"),
            ({"roles": ["leader"]}, r"plan.roles\[0\]"),
            ({"topologies": "standalone"}, "plan.topologies"),
            ({"ports": [0]}, r"plan.ports\[0\]"),
            ({"ports": [6379, True]}, r"plan.ports\[1\]"),
            ({"data_paths": ["data"]}, r"plan.data_paths\[0\]"),
            ({"behaviours": [""]}, r"plan.behaviours\[0\]"),
            ({"timeouts": {"reboot": 5}}, "plan.timeouts key"),
            ({"timeouts": {"role": 0}}, "plan.timeouts.role"),
            ({"timeouts": {"role": math.inf}}, "plan.timeouts.role"),
            ({"timeouts": {"role": "5"}}, "plan.timeouts.role"),
        ],
    )
    def test_plan_bad_field(self, changes: dict[str, Any], field: str) -> None:
        """A plan field of the wrong shape is named in the error."""
        data = {"roles": ["primary"], "topologies": ["redundant"], **changes}
        with pytest.raises(MessageDecodeError, match=field):
            plan_from_data(data)

    @pytest.mark.parametrize("key", ["roles", "topologies"])
    def test_plan_missing_key(self, key: str) -> None:
        """A plan without a required key names it."""
        data = {"roles": ["primary"], "topologies": ["redundant"]}
        del data[key]
        with pytest.raises(MessageDecodeError, match=f"'{key}'"):
            plan_from_data(data)

    def test_plan_unknown_keys(self) -> None:
        """A plan may carry keys this rolecall does not know."""
        data = {"roles": ["primary"], "topologies": ["redundant"], "gpu": True}
        assert plan_from_data(data).roles == frozenset({Role.PRIMARY})

    @pytest.mark.parametrize("key", ["role", "healthy"])
    def test_status_missing_key(self, key: str) -> None:
        """A status without a required key names it."""
        data = {"role": "primary", "healthy": True}
        del data[key]
        with pytest.raises(MessageDecodeError, match=f"'{key}'"):
            status_from_data(data)

    @pytest.mark.parametrize(
        ("key", "value"),
        [
            ("healthy", 1),
            ("role", "leader"),
            ("replication_offset", -5),
            ("link_up", "yes"),
            ("epoch", False),
            ("details", [1]),
        ],
    )
    def test_status_bad_field(self, key: str, value: object) -> None:
        """A status field of the wrong shape is named in the error."""
        data = {"role": "primary", "healthy": True, key: value}
        with pytest.raises(MessageDecodeError, match=f"status.{key}"):
            status_from_data(data)

    def test_status_unknown_keys(self) -> None:
        """A status may carry keys this rolecall does not know."""
        data = {"role": None, "healthy": False, "lag_seconds": 3}
        assert status_from_data(data) == MemberStatus(role=None, healthy=False)

    def test_not_a_map(self) -> None:
        """Plan and status data that are not maps are refused."""
        with pytest.raises(MessageDecodeError, match="plan must be a map"):
            plan_from_data([])  # type: ignore[arg-type]

        with pytest.raises(MessageDecodeError, match="status must be a map"):
            status_from_data("ok")  # type: ignore[arg-type]


# -- encoding refusals --------------------------------------------------------


class TestEncodeRefusals:
    """Values an encoding cannot carry fail as protocol errors."""

    @pytest.mark.parametrize(
        ("encoding", "value"),
        [
            pytest.param(Encoding.MSGPACK, {1, 2}, id="msgpack-set"),
            pytest.param(Encoding.JSON, {1, 2}, id="json-set"),
            pytest.param(Encoding.MSGPACK, 2**64, id="msgpack-huge-int"),
        ],
    )
    def test_unencodable(self, encoding: Encoding, value: object) -> None:
        """A set, or an integer wider than msgpack's, cannot go on the wire."""
        payload = HookPayload(
            hook=HookName.CONFIGURE,
            service="cache",
            member=cache_member(),
            config={"bad": value},
        )
        with pytest.raises(ProtocolError, match="cannot carry"):
            encode_payload(payload, encoding)

    def test_nan_in_json(self) -> None:
        """JSON payloads stay strict JSON: NaN is refused."""
        result = HookResult(data={"ratio": math.nan})
        with pytest.raises(ProtocolError):
            encode_result(result, Encoding.JSON)


# -- hostile input ------------------------------------------------------------


class TestHostileInput:
    """Whatever the bytes, decoding returns a record or a protocol error."""

    @given(data=st.binary(max_size=512), encoding=encodings)
    def test_garbage_payload(self, data: bytes, encoding: Encoding) -> None:
        """Random bytes never raise anything but a protocol error."""
        with suppress(MessageDecodeError, ProtocolVersionError):
            decode_payload(data, encoding)

    @given(data=st.binary(max_size=512), encoding=encodings)
    def test_garbage_result(self, data: bytes, encoding: Encoding) -> None:
        """Random output never raises anything but a protocol error."""
        with suppress(MessageDecodeError, ProtocolVersionError):
            decode_result(data, encoding)

    @given(
        wire=st.fixed_dictionaries(
            {"protocol": st.just(1)},
            optional={
                "hook": st.sampled_from(["role", "plan"]) | plain,
                "service": st.text(max_size=4) | plain,
                "member": plain
                | st.fixed_dictionaries(
                    {},
                    optional={
                        "id": st.text(max_size=4) | plain,
                        "role": st.sampled_from(["primary", None]) | plain,
                        "address": st.text(max_size=4) | plain,
                        "epoch": st.integers(min_value=-2, max_value=3) | plain,
                    },
                ),
                "members": st.lists(plain, max_size=3) | plain,
                "config": plain,
                "env": st.dictionaries(st.text(max_size=3), plain) | plain,
                "request": plain,
            },
        ),
        encoding=encodings,
    )
    def test_misshapen_payload(self, wire: dict[str, Any], encoding: Encoding) -> None:
        """Well-encoded payloads of any shape decode or raise a decode error."""
        with suppress(MessageDecodeError):
            decode_payload(pack(wire, encoding), encoding)

    @given(data=plain, encoding=encodings)
    def test_misshapen_result(self, data: object, encoding: Encoding) -> None:
        """Result data of any shape decodes or raises a decode error."""
        wire = {"protocol": 1, "data": data, "message": data}
        with suppress(MessageDecodeError):
            decode_result(pack(wire, encoding), encoding)

    @given(
        data=st.fixed_dictionaries(
            {},
            optional=dict.fromkeys(
                (
                    "roles",
                    "topologies",
                    "behaviours",
                    "ports",
                    "data_paths",
                    "timeouts",
                    "role",
                    "healthy",
                    "replication_offset",
                    "link_up",
                    "epoch",
                    "details",
                ),
                plain,
            ),
        )
    )
    def test_misshapen_plan_and_status(self, data: dict[str, Any]) -> None:
        """Plan and status data of any shape read or raise a decode error."""
        for read in (plan_from_data, status_from_data):
            with suppress(MessageDecodeError):
                read(data)

    @given(payload=payloads, cut=st.integers(min_value=0), flip=st.integers(0, 255))
    def test_damaged_payload(self, payload: HookPayload, cut: int, flip: int) -> None:
        """A valid payload with one byte changed or cut off fails cleanly."""
        data = bytearray(encode_payload(payload))
        index = cut % len(data)
        data[index] ^= flip or 1
        for damaged in (bytes(data), bytes(data[:index])):
            with suppress(MessageDecodeError, ProtocolVersionError):
                decode_payload(damaged)

    def test_member_memory_bounded(self) -> None:
        """Decoding many distinct members keeps the member memo bounded."""
        for epoch in range(_codec._MEMBERS_SEEN_MAX * 2):
            payload = HookPayload(
                hook=HookName.STATUS, service="cache", member=cache_member(epoch)
            )
            assert decode_payload(encode_payload(payload)) == payload

        assert len(_codec._members_seen) <= _codec._MEMBERS_SEEN_MAX


# -- public surface and document ----------------------------------------------


class TestSurface:
    """The codec's names are public, and the document matches the code."""

    def test_exported(self) -> None:
        """Every codec function is exported by the protocol package."""
        for name in _codec.__all__:
            assert name in hp.__all__
            assert getattr(hp, name) is getattr(_codec, name)

    def test_document_names_vocabulary(self) -> None:
        """The protocol document names every hook, exit code and label."""
        text = DOC.read_text(encoding="utf-8")
        for hook in HookName:
            assert f"`{hook.value}`" in text

        for exit_class in ExitClass:
            if exit_class is not ExitClass.FAILED:
                assert f"| {exit_class.value} " in text

        for word in (
            hp.LABEL_HOOK_DIR,
            hp.LABEL_HOOK_MODE,
            hp.LABEL_ENCODING,
            hp.DEFAULT_HOOK_DIR,
            "ROLECALL_ENCODING",
            "ROLECALL_HOOK_MODE",
            "ROLECALL_HOOK",
        ):
            assert word in text

    def test_document_timeouts(self) -> None:
        """The protocol document lists each hook's default timeout."""
        text = DOC.read_text(encoding="utf-8")
        for hook, seconds in DEFAULT_HOOK_TIMEOUTS.items():
            assert f"| `{hook.value}` | {seconds:g} |" in text
