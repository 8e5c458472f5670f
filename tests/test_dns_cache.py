"""The resolver's byte-level paths without namespaces: the query key (pynet/dns/wire.py) and the
forwarded-answer cache (pynet/dns/cache.py), against messages dnspython builds."""

from __future__ import annotations

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest

from pynet.dns import cache, wire

SOA = "ns.example. host.example. 1 7200 900 1209600 {minimum}"


def query(name="www.example.org", rdtype="A", **kw) -> bytes:
    return dns.message.make_query(name, rdtype, **kw).to_wire()


def response(name="www.example.org", *, ttl=30, rcode=dns.rcode.NOERROR, soa=None, truncated=False) -> bytes:
    q = dns.message.make_query(name, "A")
    r = dns.message.make_response(q)
    r.set_rcode(rcode)
    if rcode == dns.rcode.NOERROR and ttl is not None:
        r.answer.append(dns.rrset.from_text(q.question[0].name, ttl, "IN", "A", "192.0.2.7"))
    if soa is not None:
        soa_ttl, minimum = soa
        r.authority.append(dns.rrset.from_text("example.org.", soa_ttl, "IN", "SOA", SOA.format(minimum=minimum)))
    if truncated:
        r.flags |= dns.flags.TC
    return r.to_wire()


def test_same_question_in_another_case_or_id_or_payload_has_the_same_key():
    a = wire.scan(query("www.example.org", use_edns=0, payload=1232))
    b = wire.scan(query("WWW.Example.ORG", use_edns=0, payload=4096))
    assert a[0] == b[0] and a[1] == b[1]
    assert (a[2], b[2]) == (1232, 4096)
    plain = wire.scan(query("www.example.org"))
    assert plain[0] != a[0] and plain[2] == 512   # no EDNS: another answer (no OPT), 512 bytes
    assert wire.scan(query("www.example.org", "AAAA"))[0] != plain[0]
    assert wire.scan(query("www.example.org", want_dnssec=True))[0] != a[0]   # the DO bit


def test_unusual_queries_are_left_to_dnspython():
    two = dns.message.make_query("a.example", "A")
    two.question.append(dns.rrset.RRset(dns.name.from_text("b.example"), 1, 1))
    cookie = dns.message.make_query("a.example", "A", use_edns=0,
                                    options=[dns.edns.GenericOption(dns.edns.COOKIE, b"12345678")])
    compressed = bytearray(query("a.example"))
    compressed[12:23] = b"\xc0\x0c" + b"\x00" * 9   # a pointer in the question
    for odd in (two.to_wire(), query("a.example", use_edns=1), response(), bytes(compressed), b"\x00" * 11,
                query("a.example")[:-1]):
        assert wire.scan(odd) is None
    assert wire.scan(cookie.to_wire()) is not None   # options are skipped: the key ignores them


def test_splice_gives_the_askers_id_and_spelling():
    asked = query("WwW.example.ORG")
    answer = response("www.example.org")
    _key, qend, _limit = wire.scan(asked)
    reply = dns.message.from_wire(wire.splice(asked, qend, answer))
    assert reply.id == dns.message.from_wire(asked).id
    assert reply.question[0].name.to_text() == "WwW.example.ORG."
    assert [rd.to_text() for rd in reply.answer[0]] == ["192.0.2.7"]


def test_positive_answers_live_for_their_smallest_ttl_and_count_down():
    c = cache.AnswerCache()
    assert c.put("k", response(ttl=30), now=100.0)
    aged = dns.message.from_wire(c.get("k", now=112.5))
    assert aged.answer[0].ttl == 18
    assert c.get("k", now=130.0) is None


@pytest.mark.parametrize("soa,kept", [((3600, 120), 120), ((60, 900), 60), ((86400, 86400), cache.NEGATIVE_TTL_CAP)])
def test_negative_answers_live_for_min_of_soa_ttl_and_minimum_capped(soa, kept):
    for rcode in (dns.rcode.NXDOMAIN, dns.rcode.NOERROR):   # NXDOMAIN, NODATA
        c = cache.AnswerCache()
        assert c.put("k", response(ttl=None, rcode=rcode, soa=soa), now=0.0)
        assert c.get("k", now=kept - 0.5) is not None and c.get("k", now=kept) is None


@pytest.mark.parametrize("resp", [response(ttl=None, rcode=dns.rcode.NXDOMAIN),   # no SOA: RFC 2308 §5
                                  response(rcode=dns.rcode.SERVFAIL), response(rcode=dns.rcode.REFUSED),
                                  response(truncated=True), response(ttl=0), b"\x00\x01\x81\x80\x00\x01"],
                         ids=["nxdomain-no-soa", "servfail", "refused", "truncated", "ttl-0", "garbage"])
def test_answers_that_must_not_be_kept_are_not(resp):
    c = cache.AnswerCache()
    assert not c.put("k", resp, now=0.0)
    assert c.get("k", now=0.0) is None


def test_a_full_cache_drops_expired_entries_first_then_the_oldest():
    c = cache.AnswerCache(size=3)
    c.put("short", response(ttl=1), now=0.0)
    c.put("a", response(ttl=60), now=0.0)
    c.put("b", response(ttl=60), now=0.0)
    c.put("c", response(ttl=60), now=5.0)   # "short" has expired: it goes
    assert set(c.entries) == {"a", "b", "c"}
    c.put("d", response(ttl=60), now=6.0)   # none expired: the oldest goes
    assert set(c.entries) == {"b", "c", "d"}
