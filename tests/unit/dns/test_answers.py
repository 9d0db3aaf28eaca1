"""Answers built from a StateCache: which instances serve, the records, the flags, the sizes."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype

from moorage.model import Health, TaskStatus
from moorage.model.node import NodeStatus

from .world import World, answer, ask, header, query, records, server_for


def srv(*entries: tuple[int, str]) -> list[str]:
    return sorted(f"SRV 1 1 {port} {target}" for port, target in entries)


WEB_SRV = srv(
    (20000, "n1.node.moorage."),
    (20001, "n2.node.moorage."),
    (20002, "n3.node.moorage."),
    (20003, "n1.node.moorage."),
    (20004, "n2.node.moorage."),
)
WEB_A = ["A 10.0.0.1", "A 10.0.0.2", "A 10.0.0.3"]


async def test_a_and_srv_list_the_instances_with_their_ports_and_node_targets(
    world: World,
) -> None:
    await world.web()
    server = server_for(world)
    a = ask(server, "web.service.moorage", "A")
    assert a.rcode() == dns.rcode.NOERROR
    assert a.flags & dns.flags.AA and not a.flags & dns.flags.RA and a.flags & dns.flags.RD
    assert records(a) == WEB_A  # one record per distinct address
    assert all(rrset.ttl == 0 for rrset in a.answer)
    s = ask(server, "web.service.moorage", "SRV")
    assert records(s) == WEB_SRV
    assert records(s, "additional") == WEB_A  # the targets' addresses
    assert sorted(r.name.to_text() for r in s.additional) == [
        "n1.node.moorage.",
        "n2.node.moorage.",
        "n3.node.moorage.",
    ]
    assert not s.authority


async def test_critical_instances_leave_warning_ones_stay_as_in_consul(world: World) -> None:
    await world.web()
    await world.node("n4", "10.0.0.4")
    await world.task("web-crit", "web", "n1", 20010, health=Health.CRITICAL)
    await world.task("web-warn", "web", "n4", 20011, health=Health.WARNING)
    await world.task("web-starting", "web", "n4", 20012, status=TaskStatus.STARTING)
    await world.task("web-nochecks", "web", "n4", 20013, health=None)
    server = server_for(world)
    ports = {r.split()[3] for r in records(ask(server, "web.service.moorage", "SRV"))}
    assert ports == {"20000", "20001", "20002", "20003", "20004", "20011", "20013"}
    assert records(ask(server, "web.service.moorage", "A")) == [*WEB_A, "A 10.0.0.4"]
    # a node that went down makes its instances critical (the node check)
    await world.node("n4", "10.0.0.4", status=NodeStatus.DOWN)
    assert records(ask(server, "web.service.moorage", "A")) == WEB_A


async def test_tags_filter_and_the_rfc2782_form_is_understood(world: World) -> None:
    await world.web()
    await world.node("n9", "10.0.0.9")
    await world.service("web-canary", tags=["canary"], discovery_name="web")
    await world.task("canary-1", "web-canary", "n9", 21000)
    server = server_for(world)
    assert len(records(ask(server, "web.service.moorage", "SRV"))) == 6
    assert records(ask(server, "v1.web.service.moorage", "SRV")) == WEB_SRV
    assert records(ask(server, "primary.web.service.moorage", "SRV")) == WEB_SRV  # tag "Primary"
    assert records(ask(server, "canary.web.service.moorage", "A")) == ["A 10.0.0.9"]
    assert records(ask(server, "_web._v1.service.moorage", "SRV")) == WEB_SRV
    assert len(records(ask(server, "_web._tcp.service.moorage", "SRV"))) == 6  # no tag filter
    missing = ask(server, "v2.web.service.moorage", "SRV")
    assert missing.rcode() == dns.rcode.NXDOMAIN and not missing.answer


async def test_nodes_and_addresses(world: World) -> None:
    await world.web()
    await world.node("n6", "fd00::6")
    await world.service("api")
    await world.task("api-1", "api", "n6", 22000)
    server = server_for(world)
    assert records(ask(server, "n2.node.moorage", "A")) == ["A 10.0.0.2"]
    assert records(ask(server, "n6.node.moorage", "AAAA")) == ["AAAA fd00::6"]
    assert records(ask(server, "api.service.moorage", "AAAA")) == ["AAAA fd00::6"]
    api = ask(server, "api.service.moorage", "SRV")
    assert records(api) == ["SRV 1 1 22000 n6.node.moorage."]
    assert records(api, "additional") == ["AAAA fd00::6"]
    no_v6 = ask(server, "n2.node.moorage", "AAAA")
    assert no_v6.rcode() == dns.rcode.NOERROR and not no_v6.answer
    assert records(no_v6, "authority")[0].startswith("SOA ns.moorage. hostmaster.moorage.")
    assert ask(server, "n7.node.moorage", "A").rcode() == dns.rcode.NXDOMAIN
    assert records(ask(server, "0a000005.addr.moorage", "A")) == ["A 10.0.0.5"]
    assert records(ask(server, "fd000000000000000000000000000006.addr.moorage", "AAAA")) == [
        "AAAA fd00::6"
    ]
    assert ask(server, "zz.addr.moorage", "A").rcode() == dns.rcode.NXDOMAIN


async def test_nxdomain_and_no_data_carry_the_soa_and_aa(world: World) -> None:
    await world.web()
    server = server_for(world, ttl=30)
    for name in ("nope.service.moorage", "a.b.c.service.moorage", "foo.bar.moorage"):
        missing = ask(server, name, "A")
        assert missing.rcode() == dns.rcode.NXDOMAIN, name
        assert missing.flags & dns.flags.AA and not missing.flags & dns.flags.RA
        assert not missing.answer
        (soa,) = missing.authority
        assert soa.name.to_text() == "moorage." and soa.rdtype == dns.rdatatype.SOA
        assert soa[0].mname.to_text() == "ns.moorage." and soa[0].minimum == 30
        assert soa.ttl == 30
    for name, rdtype in [
        ("web.service.moorage", "AAAA"),
        ("web.service.moorage", "TXT"),
        ("web.service.moorage", "MX"),
        ("moorage", "A"),
        ("service.moorage", "A"),
    ]:
        empty = ask(server, name, rdtype)
        assert empty.rcode() == dns.rcode.NOERROR, (name, rdtype)
        assert not empty.answer and empty.flags & dns.flags.AA
        assert [rrset.rdtype for rrset in empty.authority] == [dns.rdatatype.SOA]
    apex = ask(server, "moorage", "SOA")
    assert records(apex)[0].startswith("SOA ns.moorage. hostmaster.moorage.")
    assert all(rrset.ttl == 30 for rrset in ask(server, "web.service.moorage").answer)


async def test_names_are_case_insensitive_and_answered_as_asked(world: World) -> None:
    await world.web()
    server = server_for(world)
    upper = ask(server, "WeB.SeRvIcE.MoOrAgE", "SRV")
    assert records(upper) == WEB_SRV
    assert upper.answer[0].name.to_text() == "WeB.SeRvIcE.MoOrAgE."
    assert records(ask(server, "N1.NODE.MOORAGE", "A")) == ["A 10.0.0.1"]


async def test_other_domains_are_refused_unless_aliased(world: World) -> None:
    await world.web()
    server = server_for(world, alt_domain="consul.")
    refused = ask(server, "example.com", "A")
    assert refused.rcode() == dns.rcode.REFUSED and not refused.flags & dns.flags.AA
    consul = ask(server, "web.service.consul", "SRV")
    assert records(consul) == sorted(r.replace(".moorage.", ".consul.") for r in WEB_SRV)
    assert ask(server, "nope.service.consul").authority[0].name.to_text() == "consul."
    chaos = dns.message.make_query("web.service.moorage", "A", rdclass="CH")
    out = answer(server, chaos.to_wire())
    assert out is not None and dns.message.from_wire(out).rcode() == dns.rcode.REFUSED


async def test_records_rotate_from_one_answer_to_the_next(world: World) -> None:
    await world.web()
    server = server_for(world)
    firsts = set()
    for _ in range(5):
        msg = ask(server, "web.service.moorage", "SRV")
        assert records(msg) == WEB_SRV
        firsts.add(msg.answer[0][0].port)  # the rrset keeps the wire order
    assert len(firsts) == 5
    orders = {tuple(r.address for r in ask(server, "web.service.moorage").answer[0]) for _ in "abc"}
    assert len(orders) == 3


async def test_any_answers_addresses_and_srv(world: World) -> None:
    await world.web()
    msg = ask(server_for(world), "web.service.moorage", "ANY")
    assert records(msg) == sorted(WEB_A + WEB_SRV)


async def test_the_query_id_rd_and_edns_are_mirrored(world: World) -> None:
    await world.web()
    server = server_for(world)
    for rd in (True, False):
        for payload in (None, 1232):
            out = answer(server, query("web.service.moorage", "A", rd=rd, payload=payload, qid=7))
            assert out is not None
            head = header(out)
            assert (head["id"], head["qr"], head["rd"], head["aa"]) == (7, 1, int(rd), 1)
            assert (dns.message.from_wire(out).edns == 0) == (payload is not None)


async def test_udp_answers_are_trimmed_to_whole_records_with_tc(world: World) -> None:
    for n in range(1, 5):
        await world.node(f"n{n}", f"10.0.1.{n}")
    await world.service("big")
    for i in range(200):
        await world.task(f"big-{i}", "big", f"n{i % 4 + 1}", 30000 + i)
    server = server_for(world)
    for payload, limit in ((None, 512), (1232, 1232), (4096, 4096), (65000, 4096)):
        out = answer(server, query("big.service.moorage", "SRV", payload=payload))
        assert out is not None and len(out) <= limit
        head = header(out)
        assert head["tc"] == 1 and 0 < head["an"] < 200
        msg = dns.message.from_wire(out)  # whole records only: it parses
        assert len(records(msg)) == head["an"] and not msg.additional
        assert msg.question[0].name.to_text() == "big.service.moorage."
        if payload:
            assert len(out) > limit - 60  # filled, not cut short
    whole = answer(server, query("big.service.moorage", "SRV"), tcp=True)
    assert whole is not None and header(whole)["tc"] == 0
    msg = dns.message.from_wire(whole)
    assert {int(r.split()[3]) for r in records(msg)} == set(range(30000, 30200))
    assert len(records(msg, "additional")) == 4
    small = answer(server, query("big.service.moorage", "A"))  # 4 addresses fit
    assert small is not None and header(small)["tc"] == 0


async def test_answers_are_rendered_once_until_the_name_changes(world: World) -> None:
    await world.web()
    server = server_for(world)
    ask(server, "web.service.moorage", "SRV")
    rendered = server.answers.rendered
    for _ in range(10):
        ask(server, "web.service.moorage", "SRV")
        ask(server, "WEB.service.moorage", "SRV")
    assert server.answers.rendered == rendered
    await world.task("web-0", "web", "n1", 20000, health=Health.CRITICAL)
    ports = {r.split()[3] for r in records(ask(server, "web.service.moorage", "SRV"))}
    assert "20000" not in ports and len(ports) == 4
    assert server.answers.rendered == rendered + 1
    await world.task("web-0", "web", "n1", 20000, health=Health.PASSING)
    assert records(ask(server, "web.service.moorage", "SRV")) == WEB_SRV
    rendered = server.answers.rendered
    await world.put("/moorage/meta/unrelated", b"1")  # the revision moves, web's index does not
    ask(server, "web.service.moorage", "SRV")
    assert server.answers.rendered == rendered
