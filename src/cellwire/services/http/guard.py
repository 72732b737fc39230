"""Which addresses HTTP sent on a workflow's behalf may reach: the network policy.

Link-local and cloud-metadata addresses are refused always: an instance's metadata service
hands out the machine's cloud credentials to whoever asks. Loopback, private, shared (CGNAT),
unspecified, multicast and reserved addresses are refused too for untrusted workflows (files
not trusted, served runs), unless an allow list names them. IPv4 addresses written in IPv6
(``::ffff:127.0.0.1``, NAT64, 6to4, ``::127.0.0.1``) are judged as the IPv4 address they
carry.

The check runs on the addresses a name resolves to, for every hop of a redirect, and the fast
transport connects to exactly the addresses that passed (:meth:`NetworkPolicy.addresses`), so
a name that resolves elsewhere between the check and the connection cannot slip through.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: ``(host, port) -> addresses``: how names are resolved (injectable for tests).
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]

#: Hosts, ``host:port`` pairs and CIDRs untrusted workflows may reach although they are
#: loopback or private, comma-separated (``NetworkPolicy.untrusted`` reads it).
ALLOW_ENV = "CELLWIRE_HTTP_ALLOW"
#: Dify's names for the http-request node's caps on a response body, in bytes.
TEXT_SIZE_ENV = "HTTP_REQUEST_NODE_MAX_TEXT_SIZE"
BINARY_SIZE_ENV = "HTTP_REQUEST_NODE_MAX_BINARY_SIZE"
#: Dify's defaults for those caps: 1 MiB of text, 10 MiB of anything else.
MAX_TEXT_SIZE = 1024 * 1024
MAX_BINARY_SIZE = 10 * 1024 * 1024

#: Never reachable: link-local (the metadata services of AWS, GCP, Azure, OpenStack and
#: DigitalOcean live at 169.254.169.254, ECS task credentials at 169.254.170.2) and the
#: metadata addresses outside it (AWS over IPv6, Alibaba Cloud, Oracle Cloud Classic).
_LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))
_METADATA = (ipaddress.ip_network("fd00:ec2::254/128"),
             ipaddress.ip_network("100.100.100.200/32"),
             ipaddress.ip_network("192.0.0.192/32"))
#: Names of metadata services, refused before they are resolved.
METADATA_HOSTS = frozenset({
    "metadata", "metadata.google.internal", "metadata.goog", "instance-data",
    "instance-data.ec2.internal", "metadata.tencentyun.com", "metadata.azure.internal",
})
_SHARED = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class AllowRule(NamedTuple):
    """One allow-list entry: a host name (``*.`` for its subdomains) or a network, and
    optionally a port."""

    host: str | None
    network: IPNetwork | None
    port: int | None

    def matches(self, host: str, port: int, address: IPAddress) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.network is not None:
            if address.version != self.network.version:
                address = _embedded(address) or address
            return address.version == self.network.version and address in self.network
        assert self.host is not None
        name = host.lower().rstrip(".")
        if self.host.startswith("*."):
            return name.endswith(self.host[1:])
        return name == self.host

    @classmethod
    def parse(cls, entry: str) -> AllowRule:
        """``host``, ``*.domain``, ``host:port``, ``10.0.0.0/8``, ``127.0.0.1:8080``,
        ``[::1]:8080``; a ``ValueError`` saying what is wrong otherwise."""
        text = entry.strip()
        if not text:
            raise ValueError("an empty allow-list entry")
        port: int | None = None
        body = text
        if text.startswith("["):  # [v6] or [v6]:port
            inside, _, rest = text[1:].partition("]")
            body = inside
            if rest:
                port = _port(rest.removeprefix(":"), entry)
        elif text.count(":") == 1:  # host:port or v4:port (a bare v6 has several colons)
            body, _, raw = text.partition(":")
            port = _port(raw, entry)
        try:
            return cls(None, ipaddress.ip_network(body, strict=False), port)
        except ValueError:
            pass
        name = body.lower().rstrip(".")
        if not name or "/" in name or any(c.isspace() for c in name):
            raise ValueError(f"allow-list entry {entry!r} is neither a host, host:port nor a "
                             "CIDR (e.g. api.internal, api.internal:8080, 10.0.0.0/8)")
        return cls(name, None, port)


def _port(raw: str, entry: str) -> int:
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ValueError(f"allow-list entry {entry!r}: {raw!r} is not a port")
    return int(raw)


def parse_allow(entries: Iterable[str] | str) -> tuple[AllowRule, ...]:
    """Allow-list entries (a comma-separated string or strings) as rules."""
    if isinstance(entries, str):
        entries = entries.split(",")
    return tuple(AllowRule.parse(e) for e in entries if e.strip())


def refusal(address: IPAddress, *, private: bool) -> tuple[str, bool] | None:
    """Why ``address`` is refused, and whether always (link-local, metadata); None when it
    may be reached. ``private``: loopback and private ranges may be reached (a trusted
    workflow)."""
    inner = _embedded(address)
    if inner is not None:
        # Where a connection to it goes: the IPv4 address it carries.
        return refusal(inner, private=private)
    if any(address in net for net in _LINK_LOCAL if net.version == address.version):
        return "a link-local address (where cloud metadata services live)", True
    if any(address in net for net in _METADATA if net.version == address.version):
        return "a cloud metadata address", True
    if private:
        return None
    if address.is_loopback:
        return "a loopback address (this machine)", False
    if address.is_unspecified:
        return "the unspecified address (this machine)", False
    if address.is_multicast:
        return "a multicast address", False
    if address.version == 4 and address in _SHARED:
        return "a shared (CGNAT) address", False
    if address.is_private:
        return "a private address", False
    if address.is_reserved:
        return "a reserved address", False
    if not address.is_global:
        return "an address that is not globally routable", False
    return None


def _embedded(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, NAT64, 6to4, IPv4-compatible)."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    number = int(address)
    if address in _NAT64 or (number >> 32 == 0 and number > 1):
        return ipaddress.IPv4Address(number & 0xFFFFFFFF)
    return None


def _same(host: str, address: str) -> bool:
    return host.strip("[]").lower() == address.lower()


async def system_resolver(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to, as the system resolver answers (in its order)."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        from .engine import ConnectError

        raise ConnectError(f"could not resolve {host}: {exc.strerror or exc}",
                           exc.strerror or str(exc)) from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True, slots=True)
class NetworkPolicy:
    """What HTTP on a workflow's behalf may reach, and how large an answer may be.

    ``private``: loopback and private networks may be reached (trusted workflows);
    ``allow``: rules that let an untrusted workflow reach named ones; link-local and
    metadata addresses never. ``max_text_size`` / ``max_binary_size`` cap an http-request
    node's response body in bytes (text, else binary). ``resolver`` resolves names (the
    system's by default). Equal policies share connection pools.
    """

    private: bool = True
    allow: tuple[AllowRule, ...] = ()
    max_text_size: int = MAX_TEXT_SIZE
    max_binary_size: int = MAX_BINARY_SIZE
    resolver: Resolver = field(default=system_resolver, repr=False)

    @classmethod
    def trusted(cls, *, environ: Mapping[str, str] | None = None,
                resolver: Resolver = system_resolver) -> NetworkPolicy:
        """For trusted workflows (the user's own cells, trusted files): everything but
        link-local and metadata addresses. Size caps from Dify's variables in ``environ``
        (the process environment by default)."""
        return cls(True, (), *_sizes(environ), resolver)

    @classmethod
    def untrusted(cls, allow: Iterable[str] | str | None = None, *,
                  environ: Mapping[str, str] | None = None,
                  resolver: Resolver = system_resolver) -> NetworkPolicy:
        """For untrusted workflows and served runs: public addresses, and the loopback or
        private ones ``allow`` names (hosts, ``host:port``, CIDRs; None: from
        ``CELLWIRE_HTTP_ALLOW`` in ``environ``)."""
        env = os.environ if environ is None else environ
        rules = parse_allow(env.get(ALLOW_ENV, "") if allow is None else allow)
        return cls(False, rules, *_sizes(environ), resolver)

    def check(self, host: str, port: int, address: str) -> None:
        """Raise :class:`AddressRefused` unless ``host:port`` may be reached at
        ``address``."""
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # fe80::1%eth0: the scope is no part
        found = refusal(ip, private=self.private)
        if found is None:
            return
        reason, always = found
        if not always and any(rule.matches(host, port, ip) for rule in self.allow):
            return
        from .refused import AddressRefused

        raise AddressRefused(host, port, address, reason, always=always)

    async def addresses(self, host: str, port: int) -> list[str]:
        """The addresses to connect to for ``host:port``, each one checked; raises
        :class:`AddressRefused` when any is refused (a name that also resolves to a
        refused address is not to be trusted with the others)."""
        bare = host.strip("[]")
        name = bare.lower().rstrip(".")
        if name in METADATA_HOSTS:
            from .refused import AddressRefused

            raise AddressRefused(host, port, name, "the name of a cloud metadata service",
                                 always=True)
        try:
            ipaddress.ip_address(bare.split("%", 1)[0])
            found: Sequence[str] = [bare]
        except ValueError:
            found = await self.resolver(bare, port)
        if not found:
            from .engine import ConnectError

            raise ConnectError(f"could not resolve {host}: no address", "no address")
        for address in found:
            self.check(bare, port, address)
        return list(found)


def _sizes(environ: Mapping[str, str] | None) -> tuple[int, int]:
    env = os.environ if environ is None else environ
    return _size(env, TEXT_SIZE_ENV, MAX_TEXT_SIZE), _size(env, BINARY_SIZE_ENV,
                                                           MAX_BINARY_SIZE)


def _size(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) <= 0:
        raise ValueError(f"{name}={raw!r} is not a size in bytes; give a positive integer, "
                         f"e.g. {name}={default}")
    return int(raw)


__all__ = [
    "ALLOW_ENV", "BINARY_SIZE_ENV", "MAX_BINARY_SIZE", "MAX_TEXT_SIZE", "METADATA_HOSTS",
    "TEXT_SIZE_ENV", "AllowRule", "NetworkPolicy", "Resolver",
    "parse_allow", "refusal", "system_resolver",
]
