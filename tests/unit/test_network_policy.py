"""The network policy's rules: which addresses are refused, always or for untrusted runs,
in every spelling; the allow list; the size caps from the environment."""

from __future__ import annotations

import ipaddress

import pytest

from cellwire.services.http import AddressRefused, NetworkPolicy
from cellwire.services.http.guard import (
    ALLOW_ENV,
    MAX_BINARY_SIZE,
    MAX_TEXT_SIZE,
    TEXT_SIZE_ENV,
    AllowRule,
    parse_allow,
    refusal,
)

ALWAYS = [
    "169.254.169.254", "169.254.170.2", "169.254.0.1", "fe80::1", "fd00:ec2::254",
    "100.100.100.200", "192.0.0.192",
    # The same addresses spelled in IPv6: mapped, NAT64, 6to4, IPv4-compatible.
    "::ffff:169.254.169.254", "::ffff:a9fe:a9fe", "64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::",
    "::169.254.169.254",
]
UNTRUSTED_ONLY = [
    "127.0.0.1", "127.1.2.3", "::1", "10.0.0.1", "172.16.5.4", "192.168.1.1", "fc00::1",
    "fd12:3456::1", "100.64.0.1", "100.127.255.254", "0.0.0.0", "::", "0.1.2.3",
    "224.0.0.1", "ff02::1", "240.0.0.1", "255.255.255.255", "198.18.0.1", "192.0.2.1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "64:ff9b::7f00:1", "2002:7f00:1::", "::127.0.0.1",
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8"]


@pytest.mark.parametrize("address", ALWAYS)
def test_link_local_and_metadata_are_refused_even_when_trusted(address):
    ip = ipaddress.ip_address(address)
    for private in (True, False):
        found = refusal(ip, private=private)
        assert found is not None and found[1] is True, (address, private)


@pytest.mark.parametrize("address", UNTRUSTED_ONLY)
def test_loopback_private_and_special_ranges_are_refused_for_untrusted_runs(address):
    ip = ipaddress.ip_address(address)
    assert refusal(ip, private=True) is None
    found = refusal(ip, private=False)
    assert found is not None and found[1] is False, address


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address):
    assert refusal(ipaddress.ip_address(address), private=False) is None


def test_the_reason_names_the_kind_of_address():
    def reason(address: str) -> str:
        found = refusal(ipaddress.ip_address(address), private=False)
        assert found is not None
        return found[0]

    assert "loopback" in reason("127.0.0.1") and "loopback" in reason("::ffff:127.0.0.1")
    assert "private" in reason("10.1.2.3")
    assert "CGNAT" in reason("100.64.1.1")
    assert "link-local" in reason("169.254.169.254")
    assert "metadata" in reason("100.100.100.200")
    assert "multicast" in reason("224.0.0.251")
    assert "unspecified" in reason("0.0.0.0")


def test_allow_list_entries():
    host, port, cidr, v6, v6_port, wild = parse_allow(
        "api.internal, localhost:8080,10.0.0.0/8 , ::1,[::1]:9000,*.corp.example")
    assert host == AllowRule("api.internal", None, None)
    assert port == AllowRule("localhost", None, 8080)
    assert cidr.network == ipaddress.ip_network("10.0.0.0/8") and cidr.port is None
    assert v6.network == ipaddress.ip_network("::1/128")
    assert v6_port.network == ipaddress.ip_network("::1/128") and v6_port.port == 9000
    assert wild.matches("db.corp.example", 5432, ipaddress.ip_address("10.0.0.5"))
    assert not wild.matches("corp.example.evil", 80, ipaddress.ip_address("10.0.0.5"))
    assert port.matches("LOCALHOST.", 8080, ipaddress.ip_address("127.0.0.1"))
    assert not port.matches("localhost", 8081, ipaddress.ip_address("127.0.0.1"))
    assert cidr.matches("anything", 1, ipaddress.ip_address("::ffff:10.9.8.7"))
    for bad in ("localhost:http", "10.0.0.1:70000", "a b"):
        with pytest.raises(ValueError, match="allow-list entry"):
            parse_allow(bad)


def test_check_lets_the_allow_list_through_but_never_to_metadata():
    policy = NetworkPolicy.untrusted(["127.0.0.1:8080", "169.254.0.0/16"], environ={})
    policy.check("127.0.0.1", 8080, "127.0.0.1")
    with pytest.raises(AddressRefused) as other_port:
        policy.check("127.0.0.1", 8081, "127.0.0.1")
    assert not other_port.value.always
    assert f"{ALLOW_ENV}=127.0.0.1:8081" in other_port.value.fix
    assert "cellwire trust" in other_port.value.fix
    with pytest.raises(AddressRefused) as metadata:
        policy.check("169.254.169.254", 80, "169.254.169.254")
    assert metadata.value.always and "never reachable" in metadata.value.fix


async def test_addresses_checks_every_address_a_name_resolves_to():
    async def resolver(host: str, port: int) -> list[str]:
        return {"mixed.example": ["93.184.216.34", "10.0.0.7"],
                "public.example": ["93.184.216.34", "2606:2800:220:1::1"]}[host]

    policy = NetworkPolicy.untrusted([], environ={}, resolver=resolver)
    assert await policy.addresses("public.example", 443) == [
        "93.184.216.34", "2606:2800:220:1::1"]
    with pytest.raises(AddressRefused) as caught:
        await policy.addresses("mixed.example", 443)
    assert caught.value.address == "10.0.0.7"
    assert "mixed.example resolves to 10.0.0.7, a private address" in str(caught.value)
    # Metadata names are refused before anything is resolved, whatever the policy.
    with pytest.raises(AddressRefused, match="metadata"):
        await NetworkPolicy.trusted(resolver=resolver).addresses("metadata.google.internal", 80)


def test_constructors_read_the_environment():
    assert NetworkPolicy.trusted(environ={}).max_text_size == MAX_TEXT_SIZE
    assert NetworkPolicy.trusted(environ={}).max_binary_size == MAX_BINARY_SIZE
    small = NetworkPolicy.trusted(environ={TEXT_SIZE_ENV: "100"})
    assert small.max_text_size == 100 and small.private
    with pytest.raises(ValueError, match=TEXT_SIZE_ENV):
        NetworkPolicy.trusted(environ={TEXT_SIZE_ENV: "lots"})
    from_env = NetworkPolicy.untrusted(environ={ALLOW_ENV: "localhost:8080"})
    assert not from_env.private and from_env.allow == (AllowRule("localhost", None, 8080),)
    assert NetworkPolicy.untrusted([], environ={ALLOW_ENV: "localhost"}).allow == ()
    # Equal policies are one key: they share connection pools.
    assert NetworkPolicy.trusted(environ={}) == NetworkPolicy.trusted(environ={})
    assert hash(from_env) == hash(NetworkPolicy.untrusted(environ={ALLOW_ENV: "localhost:8080"}))
