#!/usr/bin/env python3
"""Writes tests/corpus/topologies/: malformed topologies derived from the reference
topology (topologies/clinical-research.yaml), each with its expectation.

    python3 tests/corpus/generate.py        # from the repository root; rewrites the corpus

Every case is an edit of the reference text. `@@` in the replacement marks where the
expected diagnostic points; the generator removes it and computes LINE:COL (1-based,
characters) in the written file, so an expectation is derived from the edit, not copied
from tiernet's output. The expectation is the file's first line,

    # expect: LINE:COL error[RULE]      (exit 1: invalid)
    # expect: unreadable                (exit 2: cannot be read as a topology)

or, for files whose first bytes are the point (empty, BOM, NUL, UTF-16), a sidecar
FILE.expect holding the same text without the leading '# '.

tests/hostile_topologies.rs runs `tiernet validate` on every file against it.
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "corpus", "topologies")
REF = open(os.path.join(ROOT, "topologies", "clinical-research.yaml"), encoding="utf-8").read()

CASES = []  # (file name, description, bytes or text, expectation or None, sidecar?)


def edit(text, *pairs):
    for old, new in pairs:
        n = text.count(old)
        if n != 1:
            sys.exit(f"edit target occurs {n} times: {old!r}")
        text = text.replace(old, new)
    return text


def position(text):
    i = text.index("@@")
    before = text[:i]
    line = before.count("\n") + 1
    col = i - (before.rfind("\n") + 1) + 1
    return line, col, text[:i] + text[i + 2 :]


def case(name, description, rule, *pairs, base=REF):
    """An edit of the reference; the first line carries the expectation."""
    text = "# expect: @@\n# " + description + "\n" + edit(base, *pairs)
    # The header's own marker is a placeholder: find the real one after it.
    header, body = text.split("\n", 1)
    line, col, body = position(body)
    text = f"# expect: {line + 1}:{col} error[{rule}]\n" + body
    CASES.append((name, text.encode("utf-8")))


def raw(name, data, expect):
    """Bytes exactly as given; the expectation in a sidecar."""
    CASES.append((name, data))
    CASES.append((name + ".expect", ("expect: " + expect + "\n").encode()))


def text_case(name, description, rule, text):
    """A whole text with an @@ marker, expectation on the first line."""
    body = "# " + description + "\n" + text
    line, col, body = position(body)
    CASES.append((name, (f"# expect: {line + 1}:{col} error[{rule}]\n" + body).encode("utf-8")))


def unreadable(name, description, data):
    CASES.append((name, b"# expect: unreadable\n# " + description.encode() + b"\n" + data))


# ------------------------------------------------------------------ YAML syntax
case("syntax-tab-indent.yaml", "a tab used for indentation inside a tier", "syntax",
     ("  - name: buffer\n    level: 1\n", "  - name: @@buffer\n\tlevel: 1\n"))
case("syntax-tab-before-dash.yaml", "a tab before a sequence dash", "syntax",
     ("  - name: office\n", "\t@@- name: office\n"))
case("syntax-indent-3.yaml", "a field indented by three spaces instead of four", "syntax",
     ("    level: 2\n", "   level@@: 2\n"))
case("syntax-indent-dedent.yaml", "a segment field dedented to the list's level", "syntax",
     ("  - name: office-lan\n    tier: office\n", "  - name: office-lan\n  @@tier: office\n"))
case("syntax-indent-deeper.yaml", "a field indented deeper than its siblings", "syntax",
     ("    vlan: 310\n", "      vlan@@: 310\n"))
case("syntax-unclosed-double-quote.yaml", "a double quote never closed", "syntax",
     ("  - name: office-lan\n", '  - name: @@"office-lan\n'))
case("syntax-unclosed-single-quote.yaml", "a single quote never closed", "syntax",
     ("    to: ehr\n", "    to: @@'ehr\n"))
case("syntax-unclosed-bracket.yaml", "a flow sequence never closed", "syntax",
     ("    to: [research-db, dwh, biobank-lims, file-transfer]\n",
      "    to: [research-db, dwh, biobank-lims, file-transfer\n  - name@@: ehr-secondary-use-x\n"))
case("syntax-unclosed-brace.yaml", "a flow mapping never closed", "syntax",
     ("  - name: gw-his\n    trunk: eth1\n", "  - {name: gw-his, trunk: eth1\n\ntransit-x: 1\n"),
     ("  - name: core-his\n", "  @@- name: core-his\n"))
case("syntax-wrong-bracket.yaml", "a flow sequence closed by a brace", "syntax",
     ("    ports: [tcp/5432, tcp/8000-8010]\n", "    ports: [tcp/5432, tcp/8000-8010@@}\n"))
case("syntax-missing-colon.yaml", "a field without its colon", "syntax",
     ("    vlan: 110\n", "    vlan 110\n    @@subnet-x: 1\n"))
case("syntax-mapping-in-value.yaml", "a value that looks like a mapping", "syntax",
     ("    approval: ERB-2026-003\n", "    approval: ERB@@: 2026-003\n"))
case("syntax-dash-in-mapping.yaml", "a sequence item among mapping fields", "syntax",
     ("    subnet: 10.2.10.0/24\n", "    - @@subnet: 10.2.10.0/24\n"))
case("syntax-stray-text.yaml", "a stray plain line between sections", "syntax",
     ("\ngateways:\n", "\nthe gateways follow\n@@gateways:\n"))
case("duplicate-key-top.yaml", "the flows section given twice", "duplicate-key",
     ("    ports: [icmp]                  # narrows",
      "    ports: [icmp]\n@@flows: []\n# narrows"))
case("duplicate-key-service.yaml", "a service with two addresses keys", "duplicate-key",
     ("    address: 10.3.20.30\n", "    address: 10.3.20.30\n    @@address: 10.3.20.31\n"))
case("duplicate-key-uplink.yaml", "an uplink with two next hops keys", "duplicate-key",
     ("      next_hop: 198.51.100.1\n", "      next_hop: 198.51.100.1\n      @@next_hop: 198.51.100.3\n"))
case("duplicate-key-flow-name.yaml", "a flow with its name given twice", "duplicate-key",
     ("  - name: ping-gateways\n", "  - name: ping-gateways\n    @@name: ping-vdi\n"))
case("duplicate-key-inline.yaml", "a duplicate key in a flow mapping", "duplicate-key",
     ("  - name: gw-his\n    trunk: eth1\n", "  - {name: gw-his, trunk: eth1, @@trunk: eth2}\n"))
case("syntax-anchor.yaml", "an anchor and an alias to reuse a segment's fields", "syntax",
     ("  - name: office-lan\n    tier: office\n    vlan: 210\n",
      "  - name: office-lan\n    tier: &t @@office\n    vlan: 210\n"))
case("syntax-merge-key.yaml", "a merge key pulling in another mapping", "syntax",
     ("    gateway: gw-his\n\nservices:", "    gateway: gw-his\n  - <<: @@*base\n    name: his2\n\nservices:"))
case("syntax-tag-str.yaml", "a YAML tag on a value", "syntax",
     ("    vlan: 410\n", "    vlan: !!str @@410\n"))
case("syntax-tag-include.yaml", "a custom include tag", "syntax",
     ("services:                          # named endpoints inside segments\n",
      "services: !include @@services.yaml\nservices-x:\n"))
case("syntax-complex-key.yaml", "a sequence used as a mapping key", "syntax",
     ("    availability: critical\n", "    availability: critical\n    ? @@[a, b]\n    : c\n"))
case("syntax-directive.yaml", "a YAML directive after content", "syntax",
     ("\ngateways:\n", "\n@@%YAML 1.2\ngateways:\n"))

text_case("syntax-top-sequence.yaml", "a list instead of a topology mapping", "syntax",
          "@@- version: 1\n  name: clinical-research\n")
text_case("syntax-top-scalar.yaml", "a plain sentence instead of a topology", "syntax",
          "@@this is not a topology\n")
text_case("syntax-top-flow-seq.yaml", "a flow sequence instead of a topology", "syntax",
          "@@[version, 1]\n")
text_case("multi-document.yaml", "two documents in one file: the second would be ignored", "syntax",
          REF + "@@---\n" + REF)
text_case("multi-document-garbage.yaml", "a second document that does not even parse", "syntax",
          REF + "@@---\n[[[ {{{ \"\n")
text_case("multi-document-after-end.yaml", "content after an explicit document end", "syntax",
          REF + "...\n@@flows:\n  - name: sneaky\n    from: internet\n    to: research-db\n")
text_case("multi-document-explicit.yaml", "an explicit start, then a second document that loosens flows", "syntax",
          "---\n" + REF + "@@--- # override\nflows: []\n")

# billion laughs: nine levels of nine aliases each (387,420,489 leaves if expanded)
lol = ['version: 1\nname: lol\nlol0: &a0 @@["lol"]\n']
for i in range(1, 10):
    lol.append(f"lol{i}: &a{i} [" + ", ".join([f"*a{i-1}"] * 9) + "]\n")
lol.append("tiers: *a9\n")
text_case("alias-bomb.yaml", "billion laughs: nine levels of nine aliases", "syntax", "".join(lol))
text_case("alias-self.yaml", "an alias used before its anchor is complete", "syntax",
          "version: 1\nname: loop\ntiers: &x\n  @@- *x\n")
text_case("alias-undefined.yaml", "an alias to an anchor that does not exist", "syntax",
          "version: 1\nname: x\ntiers: @@*nothing\n")
text_case("nesting-flow-deep.yaml", "ten thousand nested flow sequences", "syntax",
          "version: 1\nname: deep\ntiers: " + "[" * 255 + "@@" + "[" * 9745 + "]" * 10000 + "\n")
deep = "version: 1\nname: deep\ntiers:\n" + "".join(("@@" if i == 32 else "") + "  " * i + "- \n" for i in range(1, 1000))
text_case("nesting-block-deep.yaml", "a thousand nested block sequences, one per line", "syntax", deep)
# found while writing this corpus: 10,000 levels (20 KB) overflowed the YAML parser's stack
text_case("nesting-compact-deep.yaml", "ten thousand compact nested sequences on one line", "syntax",
          "version: 1\nname: deep\ntiers:\n@@  " + "- " * 10000 + "x\n")
text_case("nesting-compact-deep-map.yaml", "compact sequences of mappings nested on one line", "syntax",
          "version: 1\nname: deep\ntiers:\n@@  " + "- ? " * 5000 + "x\n")
text_case("nesting-map-deep.yaml", "two thousand nested flow mappings", "syntax",
          "version: 1\nname: deep\ntiers: " + "{a: " * 255 + "@@" + "{a: " * 1745 + "1" + "}" * 2000 + "\n")

# ------------------------------------------------------------------ bytes and encodings
raw("empty.yaml", b"", "1:1 error[version]")
raw("whitespace-only.yaml", b"   \n\n  \n", "4:1 error[version]")
raw("comments-only.yaml", b"# a topology\n# to be written\n", "3:1 error[version]")
raw("bom.yaml", b"\xef\xbb\xbf" + edit(REF, ("    vlan: 900\n", "    vlan: 4095\n")).encode(),
    "36:11 error[vlan-range]")
raw("utf16le.yaml", "\ufeff".encode("utf-16-le") + REF.encode("utf-16-le"), "unreadable")
raw("utf16be-no-bom.yaml", REF.encode("utf-16-be"), "1:1 error[syntax]")
raw("nul-first.yaml", b"\x00" + REF.encode(), "1:1 error[syntax]")
unreadable("latin1-description.yaml", "a Latin-1 byte in a description",
           edit(REF, ("Clinical research data", "Recherche clinique (donn\x00es)")).replace("\x00", "@").encode().replace(b"@", b"\xe9"))
unreadable("invalid-utf8-name.yaml", "a lone continuation byte in a name",
           REF.encode().replace(b"name: dwh\n", b"name: dw\x80h\n"))
unreadable("overlong-utf8.yaml", "an overlong encoding of '/' in a subnet",
           REF.encode().replace(b"10.3.20.0/24", b"10.3.20.0\xc0\xaf24", 1))
unreadable("surrogate-utf8.yaml", "a UTF-8 encoded surrogate in a service name",
           REF.encode().replace(b"name: ehr\n", b"name: e\xed\xa0\x80hr\n"))
unreadable("truncated-utf8.yaml", "a file cut in the middle of a multi-byte character",
           REF.encode() + b"# caf\xc3")
case("nul-in-value.yaml", "a NUL byte inside a quoted name", "syntax",
     ("  - name: research-db\n", '  - name: "research@@\x00db"\n'))
case("nul-in-plain.yaml", "a NUL byte inside a plain name", "syntax",
     ("  - name: research-db\n", "  - name: research@@\x00db\n"))
case("control-bell.yaml", "a BEL control character in a segment name", "syntax",
     ("  - name: vdi\n", "  - name: vdi@@\x07\n"))
case("control-escape.yaml", "an ANSI escape sequence in a description", "syntax",
     ("    description: Office and academic network, internet access\n",
      "    description: Office@@\x1b[31m network\n"))
case("bom-inside.yaml", "a byte order mark in the middle of the file", "unknown-field",
     ("  - name: his\n    tier: hospital\n", "  - name: his\n    @@\ufefftier: hospital\n"))
case("homoglyph-key.yaml", "a field name with a Cyrillic letter", "unknown-field",
     ("    gateway: gw-his\n", "    @@g\u0430teway: gw-his\n"))
case("homoglyph-reference.yaml", "a gateway reference with a Cyrillic letter", "reference",
     ("    gateway: gw-his\n", "    gateway: @@gw-h\u0456s\n"))
case("zero-width-reference.yaml", "a service reference with a zero-width space", "reference",
     ("    to: ehr\n", "    to: @@e\u200bhr\n"))
case("rtl-override-reference.yaml", "a right-to-left override inside a reference", "reference",
     ("    from: dwh\n", "    from: @@\u202ehwd\n"))
case("nbsp-indent.yaml", "a no-break space used as indentation", "syntax",
     ("    trunk: eth1                    # parent", "\u00a0   trunk: eth1                    # parent"),
     ("    uplink:    ", "    uplink@@:    "))
case("crlf-overlap.yaml", "Windows line endings, and two segments sharing a subnet", "overlap",
     ("    subnet: 10.3.20.0/24\n", "    subnet: @@10.3.10.0/24\n"), base=REF)
# CRLF is applied after the marker is computed: columns and lines are unchanged.
name, data = CASES.pop()
CASES.append((name, data.replace(b"\n", b"\r\n")))

# ------------------------------------------------------------------ sizes
long_name = "x" * 100_000
case("long-reference.yaml", "a 100,000-character tier reference", "reference",
     ("    tier: hospital\n", "    tier: @@" + long_name + "\n"))
case("long-line-description.yaml", "a 1 MB description, then a bad VLAN", "vlan-range",
     ("    description: Hospital information system (EHR)\n",
      "    description: " + "EHR " * 250_000 + "\n"), ("    vlan: 410\n", "    vlan: @@0\n"))
case("huge-level.yaml", "a level far beyond any integer type", "type",
     ("    level: 4\n", "    level: @@" + "9" * 400 + "\n"))
case("huge-vlan.yaml", "a VLAN id past 2^32", "type",
     ("    vlan: 320\n", "    vlan: @@4294967296\n"))
case("huge-vlan-u32max.yaml", "a VLAN id of 2^32-1", "vlan-range",
     ("    vlan: 320\n", "    vlan: @@4294967295\n"))
case("huge-port.yaml", "a port with forty digits", "ports",
     ("    ports: [tcp/5432]\n", "    ports: [@@tcp/" + "1" * 40 + "]\n"))
case("huge-prefix.yaml", "a prefix length of 4294967296", "address",
     ("    subnet: 10.4.10.0/24\n", "    subnet: @@10.4.10.0/4294967296\n"))
many = "".join(f"  - name: junk-{i}\n    from: internet\n    to: research-db\n" for i in range(2000))
case("many-errors.yaml", "two thousand flows from the internet to a database", "internet-in",
     ("    ports: [icmp]                  # narrows the service's ports; must be a subset, icmp aside\n",
      "    ports: [icmp]\n" + many.replace("to: research-db", "to: @@research-db", 1)))
many_names = "".join(f"  - name: twin\n    from: vdi\n    to: dwh\n" for _ in range(3000))
case("many-duplicates.yaml", "three thousand flows with one name", "duplicate-name",
     ("    ports: [icmp]                  # narrows the service's ports; must be a subset, icmp aside\n",
      "    ports: [icmp]\n" + many_names.replace("  - name: twin\n", "  - name: @@twin\n", 2).replace("  - name: @@twin\n", "  - name: twin\n", 1)))

# ------------------------------------------------------------------ top level and types
case("version-missing.yaml", "no version", "version", ("version: 1\nname: clinical-research\n", "@@name: clinical-research\n"))
case("version-2.yaml", "a future format version", "version", ("version: 1\n", "version: @@2\n"))
case("version-zero.yaml", "format version 0", "version", ("version: 1\n", "version: @@0\n"))
case("version-word.yaml", "the version spelt out", "type", ("version: 1\n", "version: @@one\n"))
case("version-float.yaml", "version 1.0", "type", ("version: 1\n", "version: @@1.0\n"))
case("version-list.yaml", "the version as a list", "type", ("version: 1\n", "version: @@[1]\n"))
case("name-missing.yaml", "no topology name", "missing-field", ("version: 1\nname: clinical-research\n", "@@version: 1\n"))
case("name-empty.yaml", "an empty topology name", "type", ("name: clinical-research\n", "@@name: ''\n"))
case("tiers-scalar.yaml", "tiers as a single word", "type",
     ("tiers:\n  - name: buffer\n", "tiers: @@buffer\ntiers-x:\n  - name: buffer\n"))
case("tiers-mapping.yaml", "tiers as a mapping", "type",
     ("tiers:\n  - name: buffer\n", "tiers:\n  @@buffer:\n    name: buffer\n  zz:\n  - name: buffer\n"))
case("flows-number.yaml", "flows as a number", "type",
     ("flows:                             # who may", "flows: @@42\nflows-x:                             # who may"))
case("tier-scalar-item.yaml", "a tier written as a plain name", "type",
     ("  - name: office\n    level: 2\n", "  - @@office\n  - name: office\n    level: 2\n"))
case("tier-level-word.yaml", "a tier level given as a word", "type", ("    level: 3\n", "    level: @@high\n"))
case("tier-level-negative.yaml", "a negative tier level", "type", ("    level: 2\n", "    level: @@-2\n"))
case("tier-level-zero.yaml", "a tier level of 0", "tier-level", ("    level: 1\n", "    level: @@0\n"))
case("tier-level-list.yaml", "a tier level as a list", "type", ("    level: 4\n", "    level: @@[4]\n"))
case("tier-level-missing.yaml", "a tier without a level", "missing-field",
     ("  - name: office\n    level: 2\n", "  - @@name: office\n"))
case("tier-name-missing.yaml", "a tier without a name", "missing-field",
     ("  - name: buffer\n    level: 1\n", "  - @@level: 1\n"))
case("tier-internet-yes.yaml", "internet: yes", "type", ("    internet: outbound\n", "    internet: @@yes\n"))
case("tier-internet-bool.yaml", "internet: true", "type", ("    internet: inbound   ", "    internet: @@true   "))
case("tier-approval-yes.yaml", "requires_approval: yes", "type",
     ("    requires_approval: true  ", "    requires_approval: @@yes   "))
case("tier-approval-number.yaml", "requires_approval: 1", "type",
     ("    requires_approval: true  ", "    requires_approval: @@1     "))
case("tier-availability.yaml", "an unknown availability", "type",
     ("    availability: critical\n", "    availability: @@life-critical\n"))
case("tier-roles-mapping.yaml", "inbound_roles as a list of mappings", "type",
     ("    inbound_roles: [thin-client, transfer]", "    inbound_roles: [@@{role: thin-client}, transfer]"))
case("gateway-name-list.yaml", "a gateway name as a list", "type",
     ("  - name: gw-his\n    trunk: eth1\n", "  - name: @@[gw-his]\n    trunk: eth1\n"))
case("gateway-uplink-scalar.yaml", "an uplink as an interface name", "type",
     ("    uplink:                        # the way to the internet, if any\n      interface: eth0\n      address: 198.51.100.2/30\n      next_hop: 198.51.100.1\n",
      "    uplink: @@eth0\n"))
case("gateway-trunk-list.yaml", "a trunk as a list of ports", "type",
     ("    trunk: eth1                    # parent", "    trunk: @@[eth1, eth2]          # parent"))
case("segment-vlan-word.yaml", "a VLAN id with a letter", "type", ("    vlan: 110\n", "    vlan: @@110a\n"))
case("segment-vlan-hex.yaml", "a VLAN id in hex", "type", ("    vlan: 210\n", "    vlan: @@0x6e\n"))
case("segment-vlan-negative.yaml", "a negative VLAN id", "type", ("    vlan: 310\n", "    vlan: @@-310\n"))
case("segment-vlan-float.yaml", "a VLAN id with a decimal point", "type", ("    vlan: 410\n", "    vlan: @@410.0\n"))
case("segment-subnet-mapping.yaml", "a subnet as a mapping", "type",
     ("    subnet: 10.2.10.0/24\n", "    subnet: @@{net: 10.2.10.0, len: 24}\n"))
case("segment-gateway-list.yaml", "a segment routed by two gateways", "type",
     ("    gateway: gw-his\n", "    gateway: @@[gw-his, gw-core]\n"))
case("segment-name-empty.yaml", "a segment with an empty name", "type",
     ("  - name: biobank\n", '  - @@name: ""\n'))
case("segment-name-blank.yaml", "a segment name with only spaces", "type",
     ("  - name: biobank\n", '  - name: @@"   "\n'))
case("service-ports-mapping.yaml", "ports as a mapping", "type",
     ("    ports: [tcp/22]\n", "    ports: @@{tcp: 22}\n"))
case("service-exposed-yes.yaml", "exposed: yes", "type", ("    exposed: true                  # reachable", "    exposed: @@yes                   # reachable"))
case("service-exposed-string.yaml", "exposed: \"TRUE\"", "type", ("    exposed: true\n  - name: edc-export", '    exposed: @@"TRUE"\n  - name: edc-export'))
case("service-role-space.yaml", "a role with a space", "type", ("    role: thin-client\n", "    role: @@thin client\n"))
case("service-role-list.yaml", "a role as a list", "type", ("    role: transfer                 # an audited", "    role: @@[transfer]             # an audited"))
case("flow-from-mapping.yaml", "from as a mapping", "type", ("    from: vdi\n", "    from: @@{tier: research}\n"))
case("flow-to-nested-list.yaml", "to as a nested list", "type", ("    to: [research-db, dwh, biobank-lims, file-transfer]", "    to: [research-db, @@[dwh, biobank-lims], file-transfer]"))
case("flow-expires-format.yaml", "an expiry date in day.month.year", "type", ("    expires: 2027-03-31 ", "    expires: @@31.03.2027 "))
case("flow-expires-invalid-day.yaml", "an expiry date of February 30th", "type", ("    expires: 2027-03-31 ", "    expires: @@2027-02-30 "))
case("flow-name-empty.yaml", "a flow with an empty name", "type", ("  - name: ehr-secondary-use\n", "  - @@name:\n"))
case("flow-approval-list.yaml", "approval as a list", "type", ("    approval: ERB-2026-003\n", "    approval: @@[ERB-2026-003, ERB-2026-004]\n"))
case("description-mapping.yaml", "a description as a mapping", "type",
     ("    description: Office and academic network, internet access\n", "    description: @@{en: Office, de: Buero}\n"))

# ------------------------------------------------------------------ unknown and missing fields
case("unknown-top-level.yaml", "a misspelt section name", "unknown-field", ("\nflows:  ", "\n@@flow:   "))
case("unknown-vlan-id.yaml", "vlan_id instead of vlan", "unknown-field", ("    vlan: 310\n", "    @@vlan_id: 310\n"))
case("unknown-service-port.yaml", "port instead of ports", "unknown-field", ("    ports: [tcp/25]\n", "    @@port: tcp/25\n    ports: [tcp/25]\n"))
case("unknown-flow-protocol.yaml", "a protocol field on a flow", "unknown-field", ("    to: edc-export\n", "    to: edc-export\n    @@protocol: tcp\n"))
case("unknown-flow-approved.yaml", "approved instead of approval", "unknown-field", ("    approval: ERB-2026-017 ", "    @@approved: ERB-2026-017 "))
case("unknown-flow-action.yaml", "an 'action: deny' a firewall admin might expect", "unknown-field",
     ("    to: internet\n", "    to: internet\n    @@action: deny\n"))
case("unknown-tier-field.yaml", "internets instead of internet", "unknown-field", ("    internet: outbound\n", "    @@internets: outbound\n"))
case("unknown-uplink-field.yaml", "a gateway field inside the uplink", "unknown-field", ("      next_hop: 198.51.100.1\n", "      next_hop: 198.51.100.1\n      @@gateway: 198.51.100.1\n"))
case("unknown-capitalised.yaml", "Name instead of name", "unknown-field", ("  - name: research-db\n", "  - @@Name: research-db\n"))
case("missing-segment-tier.yaml", "a segment without a tier", "missing-field", ("  - name: vdi\n    tier: research\n", "  - @@name: vdi\n"))
case("missing-segment-gateway.yaml", "a segment without a gateway", "missing-field", ("    subnet: 10.4.10.0/24\n    gateway: gw-his\n", "    subnet: 10.4.10.0/24\n"), ("  - name: his\n", "  - @@name: his\n"))
case("missing-segment-subnet.yaml", "a segment without a subnet", "missing-field", ("    vlan: 210\n    subnet: 10.2.10.0/24\n", "    vlan: 210\n"), ("  - name: office-lan\n", "  - @@name: office-lan\n"))
case("missing-service-ports.yaml", "a service without ports", "missing-field", ("    address: 10.3.20.30\n    ports: [tcp/5432]\n", "    address: 10.3.20.30\n"), ("  - name: research-db\n", "  - @@name: research-db\n"))
case("missing-service-address.yaml", "a service without an address", "missing-field", ("    address: 10.4.10.10\n", ""), ("  - name: ehr\n", "  - @@name: ehr\n"))
case("missing-flow-from.yaml", "a flow without from", "missing-field", ("  - name: thin-client\n    from: office-lan\n", "  - @@name: thin-client\n"))
case("missing-uplink-interface.yaml", "an uplink without its interface", "missing-field", ("      interface: eth0\n      address: 198.51.100.2/30\n", "      @@address: 198.51.100.2/30\n"))
case("missing-uplink-address.yaml", "an uplink without an address", "missing-field", ("      interface: eth0\n      address: 198.51.100.2/30\n", "      @@interface: eth0\n"))
case("missing-transit-gateways.yaml", "a transit link without gateways", "missing-field", ("    subnet: 10.255.0.0/30\n    gateways: [gw-core, gw-his]\n", "    subnet: 10.255.0.0/30\n"), ("  - name: core-his\n", "  - @@name: core-his\n"))

# ------------------------------------------------------------------ addresses
case("cidr-prefix-33.yaml", "a /33 IPv4 subnet", "address", ("    subnet: 10.1.10.0/24  ", "    subnet: @@10.1.10.0/33  "))
case("cidr-double-prefix.yaml", "two prefix lengths", "address", ("    subnet: 10.2.10.0/24\n", "    subnet: @@10.2.10.0/24/8\n"))
case("cidr-host-bits.yaml", "a subnet written with its router's address", "address", ("    subnet: 10.3.10.0/24\n", "    subnet: @@10.3.10.1/24\n"))
case("cidr-octet-300.yaml", "an octet of 300", "address", ("    subnet: 10.3.20.0/24\n", "    subnet: @@10.300.20.0/24\n"))
case("cidr-leading-zeros.yaml", "octets with leading zeros", "address", ("    subnet: 10.3.30.0/24\n", "    subnet: @@010.003.030.000/24\n"))
case("cidr-ipv6-double-colon.yaml", "an IPv6 subnet with two '::'", "address", ("    subnet: 10.4.10.0/24\n", "    subnets: [10.4.10.0/24, @@fd00::4::/64]\n"))
case("cidr-name.yaml", "a segment name where the subnet belongs", "address", ("    subnet: 10.255.0.0/30\n", "    subnet: @@office-lan\n"))
case("cidr-transit-32.yaml", "a transit link with a /32", "address", ("    subnet: 10.255.0.0/30\n", "    subnet: @@10.255.0.0/32\n"))
case("address-outside.yaml", "a service address outside its segment", "address", ("    address: 10.3.20.40\n", "    address: @@10.3.21.40\n"))
case("address-network.yaml", "a service on the network address", "address", ("    address: 10.4.10.10\n", "    address: @@10.4.10.0\n"))
case("address-broadcast.yaml", "a service on the broadcast address", "address", ("    address: 10.3.30.10\n", "    address: @@10.3.30.255\n"))
case("address-router.yaml", "a service on the router's address", "address", ("    address: 10.1.10.25\n", "    address: @@10.1.10.1\n"))
case("address-collision.yaml", "two services on one address", "address", ("    address: 10.3.20.30\n", "    address: @@10.3.20.20\n"))
case("address-zone.yaml", "an IPv6 address with a zone", "address", ("    address: 10.3.10.10\n", "    address: @@fe80::10%eth1\n"))
case("address-garbage.yaml", "a host name where an address belongs", "address", ("    address: 10.1.10.11\n", "    address: @@edc-export.example.org\n"))
case("router-outside.yaml", "a router address outside its subnet", "address", ("    router_address: 10.3.30.254 ", "    router_address: @@10.3.31.254 "))
case("router-broadcast.yaml", "a router address on the broadcast address", "address", ("    router_address: 10.3.30.254 ", "    router_address: @@10.3.30.255 "))
case("router-not-ip.yaml", "a router address with a wildcard", "address", ("    router_address: 10.3.30.254 ", "    router_address: @@10.3.30.x   "))
case("uplink-no-prefix.yaml", "an uplink address without its prefix length", "address", ("      address: 198.51.100.2/30\n", "      address: @@198.51.100.2\n"))
case("uplink-network-address.yaml", "an uplink on its network address", "address", ("      address: 198.51.100.2/30\n", "      address: @@198.51.100.0/30\n"))
case("nexthop-outside.yaml", "a next hop off the uplink's network", "address", ("      next_hop: 198.51.100.1\n", "      next_hop: @@198.51.101.1\n"))
case("nexthop-self.yaml", "the uplink's own address as next hop", "address", ("      next_hop: 198.51.100.1\n", "      next_hop: @@198.51.100.2\n"))
case("nexthop-word.yaml", "a next hop by name", "address", ("      next_hop: 198.51.100.1\n", "      next_hop: @@isp-router\n"))

# ------------------------------------------------------------------ overlap, VLANs, attachment
case("overlap-equal.yaml", "two segments with one subnet", "overlap", ("    subnet: 10.2.10.0/24\n", "    subnet: @@10.1.10.0/24\n"))
case("overlap-supernet.yaml", "a segment covering all of 10.3/16", "overlap", ("    subnet: 10.3.30.0/24\n", "    subnet: @@10.3.0.0/16\n"))
case("overlap-transit.yaml", "a transit link inside a segment", "overlap", ("    subnet: 10.255.0.0/30\n", "    subnet: 10.4.10.0/30\n"), ("    subnet: 10.4.10.0/24\n", "    subnet: @@10.4.10.0/24\n"))
case("overlap-uplink.yaml", "a segment over the uplink network", "overlap", ("    subnet: 10.3.20.0/24\n", "    subnet: @@198.51.100.0/24\n"))
case("overlap-default.yaml", "a segment claiming 0.0.0.0/0", "overlap", ("    subnet: 10.4.10.0/24\n", "    subnet: @@0.0.0.0/0\n"))
case("overlap-ipv6.yaml", "two IPv6 subnets, one inside the other", "overlap",
     ("    subnet: 10.1.10.0/24  ", "    subnets: [10.1.10.0/24, fd00:1::/32]"), ("    subnet: 10.2.10.0/24\n", "    subnets: [10.2.10.0/24, @@fd00:1:10::/64]\n"))
case("vlan-range-4095.yaml", "VLAN 4095", "vlan-range", ("    vlan: 410\n", "    vlan: @@4095\n"))
case("vlan-range-0.yaml", "VLAN 0", "vlan-range", ("    vlan: 110\n", "    vlan: @@0\n"))
case("vlan-conflict-segments.yaml", "two segments on VLAN 310", "vlan-conflict", ("    vlan: 320\n", "    vlan: @@310\n"))
case("vlan-conflict-transit.yaml", "a segment on the transit link's VLAN", "vlan-conflict", ("    vlan: 410\n", "    vlan: @@900\n"))
case("vlan-conflict-untagged.yaml", "two segments on one untagged port", "vlan-conflict", ("    tier: research\n    vlan: 320\n", "    tier: research\n    interface: eth3\n"),
     ("    interface: eth3   ", "    interface: @@eth3   "))
case("attachment-both.yaml", "a segment with a VLAN and a port", "attachment", ("    vlan: 210\n", "    vlan: 210\n    interface: @@eth5\n"))
case("attachment-neither.yaml", "a segment with neither VLAN nor port", "attachment", ("  - name: dmz\n    tier: buffer\n    vlan: 110\n", "  - @@name: dmz\n    tier: buffer\n"))
case("attachment-trunk-port.yaml", "a segment on the trunk as untagged port", "attachment", ("    interface: eth3   ", "    interface: @@eth1   "))
case("attachment-uplink-port.yaml", "a segment on the uplink port", "attachment", ("    interface: eth3   ", "    interface: @@eth0   "))
case("attachment-trunk-is-uplink.yaml", "a gateway whose uplink is its trunk", "attachment", ("      interface: eth0\n", "      interface: @@eth1\n"))
case("attachment-no-trunk.yaml", "a VLAN segment on a gateway without a trunk", "attachment",
     ("  - name: gw-his\n    trunk: eth1\n", "  - name: gw-his\n"), ("    vlan: 900\n", "    vlan: @@900\n"))

# ------------------------------------------------------------------ references and names
case("ref-segment-tier.yaml", "a segment in an undefined tier", "reference", ("    tier: office\n", "    tier: @@offce\n"))
case("ref-segment-gateway.yaml", "a segment routed by a misspelt gateway", "reference", ("    gateway: gw-his\n", "    gateway: @@gw-hiss\n"))
case("ref-service-segment.yaml", "a service in an undefined segment", "reference", ("    segment: biobank\n", "    segment: @@bio-bank\n"))
case("ref-flow-from.yaml", "a flow from an undefined endpoint", "reference", ("    from: dwh\n", "    from: @@data-warehouse\n"))
case("ref-flow-to.yaml", "a flow to an undefined endpoint in a list", "reference", ("    to: [research-db, dwh, biobank-lims, file-transfer]", "    to: [research-db, dwh, @@lims, file-transfer]"))
case("ref-flow-to-empty.yaml", "a flow to an empty list", "reference", ("  - name: thin-client\n    from: office-lan\n    to: vdi-gateway\n", "  - @@name: thin-client\n    from: office-lan\n    to: []\n"))
case("ref-transit-gateway.yaml", "a transit link to an undefined gateway", "reference", ("    gateways: [gw-core, gw-his]\n", "    gateways: [gw-core, @@gw-lab]\n"))
case("ref-transit-three.yaml", "a transit link with three gateways", "reference", ("    gateways: [gw-core, gw-his]\n", "    gateways: [gw-core, gw-his, @@gw-core]\n"))
case("ref-transit-twice.yaml", "a transit link joining a gateway to itself", "reference", ("    gateways: [gw-core, gw-his]\n", "    gateways: [gw-core, @@gw-core]\n"))
case("ref-same-policy-undefined.yaml", "same_policy_as an undefined tier", "reference", ("    same_policy_as: research ", "    same_policy_as: @@reserch "))
case("ref-same-policy-self.yaml", "same_policy_as itself", "reference", ("    same_policy_as: research ", "    same_policy_as: @@hospital "))
case("ref-same-policy-cycle.yaml", "a same_policy_as cycle", "reference",
     ("    inbound_roles: [thin-client, transfer]   # what less confidential tiers may reach here\n    requires_approval: true                  # flows out of this tier need an approval reference\n",
      "    same_policy_as: @@hospital\n"))
case("ref-ambiguous.yaml", "a segment named like a service", "reference", ("  - name: his\n    tier: hospital\n", "  - name: ehr\n    tier: hospital\n"), ("    segment: his\n", "    segment: ehr\n"), ("    to: ehr\n", "    to: @@ehr\n"))
case("dup-tier.yaml", "two tiers named office", "duplicate-name", ("  - name: research\n", "  - name: @@office\n"))
case("dup-gateway.yaml", "two gateways named gw-core", "duplicate-name", ("  - name: gw-his\n", "  - name: @@gw-core\n"))
case("dup-segment.yaml", "two segments named vdi", "duplicate-name", ("  - name: research-servers\n", "  - name: @@vdi\n"))
case("dup-service.yaml", "two services named dwh", "duplicate-name", ("  - name: biobank-lims\n", "  - name: @@dwh\n"))
case("dup-flow.yaml", "two flows named thin-client", "duplicate-name", ("  - name: ping-gateways\n", "  - name: @@thin-client\n"))
case("dup-transit.yaml", "two transit links with one name", "duplicate-name",
     ("    gateways: [gw-core, gw-his]\n", "    gateways: [gw-core, gw-his]\n  - name: @@core-his\n    vlan: 901\n    subnet: 10.255.0.4/30\n    gateways: [gw-core, gw-his]\n"))

# ------------------------------------------------------------------ the tier rules
case("internet-in-database.yaml", "the internet reaching the research database", "internet-in", ("    to: [edc, randomisation-mail]", "    to: [edc, @@research-db]"))
case("internet-in-segment.yaml", "the internet reaching a whole segment", "internet-in", ("    to: [edc, randomisation-mail]", "    to: [@@dmz]"))
case("internet-in-tier.yaml", "the internet reaching the buffer tier", "internet-in", ("    to: [edc, randomisation-mail]", "    to: @@buffer"))
case("internet-in-unexposed.yaml", "the internet reaching the transfer server in the DMZ", "internet-in", ("    to: [edc, randomisation-mail]", "    to: [edc, @@edc-export]"))
case("internet-in-exposed-research.yaml", "a research service marked exposed", "internet-in", ("    ports: [tcp/5432]\n  - name: dwh", "    ports: [tcp/5432]\n    exposed: @@true\n  - name: dwh"))
case("internet-in-loop.yaml", "a flow from the internet to the internet", "internet-in", ("    to: [edc, randomisation-mail]", "    to: @@internet"))
case("internet-in-inherited.yaml", "the internet reaching the hospital, which follows research", "internet-in",
     ("    to: [edc, randomisation-mail]", "    to: [edc, @@ehr]"))
case("internet-out-research.yaml", "research browsing the internet", "internet-out", ("    from: office                   # a tier", "    from: @@research                 # a tier"))
case("internet-out-buffer.yaml", "the inbound-only buffer reaching out", "internet-out", ("    from: office                   # a tier", "    from: [office, @@dmz]            # a tier"))
case("internet-out-hospital.yaml", "the hospital reaching the internet", "internet-out", ("    from: dwh\n    to: ehr\n", "    from: @@ehr\n    to: internet\n"))
case("up-database.yaml", "the office reaching the research database", "up", ("  - name: thin-client\n    from: office-lan\n    to: vdi-gateway\n", "  - name: thin-client\n    from: office-lan\n    to: @@research-db\n"))
case("up-segment.yaml", "the office reaching a research segment", "up", ("  - name: thin-client\n    from: office-lan\n    to: vdi-gateway\n", "  - name: thin-client\n    from: office-lan\n    to: @@vdi\n"))
case("up-tier.yaml", "the office reaching the whole research tier", "up", ("  - name: thin-client\n    from: office-lan\n    to: vdi-gateway\n", "  - name: thin-client\n    from: office\n    to: @@research\n"))
case("up-hospital.yaml", "the office reaching the EHR", "up", ("    from: dwh\n    to: ehr\n", "    from: office-lan\n    to: @@ehr\n"))
case("up-wrong-role.yaml", "a role not among the tier's inbound roles", "up",
     ("    ports: [tcp/5432]\n  - name: dwh", "    ports: [tcp/5432]\n    role: database\n  - name: dwh"),
     ("  - name: thin-client\n    from: office-lan\n    to: vdi-gateway\n", "  - name: thin-client\n    from: office-lan\n    to: @@research-db\n"))
case("up-buffer-to-office.yaml", "the DMZ reaching the office network", "up", ("    from: research-servers\n    to: edc-export\n", "    from: dmz\n    to: @@office-lan\n"))
case("down-segment.yaml", "research reaching the office network", "down", ("    from: research-servers\n    to: edc-export\n", "    from: research-servers\n    to: @@office-lan\n"))
case("down-service.yaml", "the warehouse reaching the EDC web service", "down", ("    from: research-servers\n    to: edc-export\n", "    from: dwh\n    to: @@edc\n"))
case("down-tier.yaml", "the hospital reaching the whole buffer tier", "down", ("    from: dwh\n    to: ehr\n", "    from: his\n    to: @@buffer\n"))
case("approval-missing-download.yaml", "a reviewed download without its approval", "approval", ("    to: file-transfer\n    approval: ERB-2026-017 ", "    to: @@file-transfer\n    # approval: ERB-2026-017"))
case("approval-missing-export.yaml", "an export without approval", "approval", ("    to: edc-export\n    approval: ERB-2026-003\n", "    to: @@edc-export\n"))
case("approval-empty.yaml", "an empty approval reference", "approval", ("    to: edc-export\n    approval: ERB-2026-003\n", "    to: @@edc-export\n    approval: ''\n"))
case("approval-blank.yaml", "an approval of spaces", "approval", ("    to: edc-export\n    approval: ERB-2026-003\n", "    to: @@edc-export\n    approval: '   '\n"))
case("same-policy-internet.yaml", "the hospital setting its own internet policy", "same-policy", ("    availability: critical\n", "    availability: critical\n    internet: @@outbound\n"))
case("same-policy-approval.yaml", "the hospital switching off approval", "same-policy", ("    availability: critical\n", "    availability: critical\n    requires_approval: @@false\n"))
case("same-policy-roles.yaml", "the hospital widening its inbound roles", "same-policy", ("    availability: critical\n", "    availability: critical\n    inbound_roles: [@@thin-client, transfer, web]\n"))

# ------------------------------------------------------------------ ports
case("ports-not-offered.yaml", "a flow port the service does not offer", "ports", ("    ports: [icmp]  ", "    ports: [@@tcp/22]"))
case("ports-wider-range.yaml", "a flow range wider than the service's", "ports", ("    to: ehr\n", "    to: dwh\n    ports: [@@tcp/8000-8020]\n"), ("    from: dwh\n", "    from: vdi\n"))
case("ports-backwards.yaml", "a range written backwards", "ports", ("    ports: [tcp/5432, tcp/8000-8010]", "    ports: [tcp/5432, @@tcp/8010-8000]"))
case("ports-zero.yaml", "port 0", "ports", ("    ports: [tcp/25]\n", "    ports: [@@tcp/0]\n"))
case("ports-65536.yaml", "port 65536", "ports", ("    ports: [tcp/25]\n", "    ports: [@@udp/65536]\n"))
case("ports-negative.yaml", "a negative port", "ports", ("    ports: [tcp/25]\n", "    ports: [@@tcp/-25]\n"))
case("ports-no-number.yaml", "a protocol without a port", "ports", ("    ports: [tcp/22]\n    role: transfer                 # an", "    ports: [@@tcp/]\n    role: transfer                 # an"))
case("ports-http.yaml", "an application protocol instead of tcp", "ports", ("    ports: [tcp/443]\n    exposed: true                  # reachable", "    ports: [@@https/443]\n    exposed: true                  # reachable"))
case("ports-uppercase.yaml", "TCP in capitals", "ports", ("    ports: [tcp/443, tcp/3389, udp/3389]", "    ports: [tcp/443, @@TCP/3389, udp/3389]"))
case("ports-sctp.yaml", "an unsupported protocol", "ports", ("    ports: [tcp/443, tcp/3389, udp/3389]", "    ports: [tcp/443, tcp/3389, @@sctp/3389]"))
case("ports-icmp-type.yaml", "an ICMP type", "ports", ("    ports: [icmp]  ", "    ports: [@@icmp/8]"))
case("ports-three-parts.yaml", "a range with three parts", "ports", ("    ports: [tcp/5432, tcp/8000-8010]", "    ports: [tcp/5432, @@tcp/8000-8005-8010]"))
case("ports-bare-number.yaml", "a bare port number", "ports", ("    ports: [tcp/5432]\n  - name: dwh", "    ports: [@@5432]\n  - name: dwh"))
case("ports-service-empty.yaml", "a service with no ports", "ports", ("  - name: biobank-lims\n    segment: biobank\n    address: 10.3.30.10\n    ports: [tcp/443]\n", "  - @@name: biobank-lims\n    segment: biobank\n    address: 10.3.30.10\n    ports: []\n"))
case("ports-flow-empty.yaml", "a flow with an empty port list", "ports", ("  - name: ping-gateways\n    from: office-lan\n    to: vdi-gateway\n    ports: [icmp]", "  - @@name: ping-gateways\n    from: office-lan\n    to: vdi-gateway\n    ports: []    "))
case("ports-space-inside.yaml", "a space inside a port", "ports", ("    ports: [tcp/25]\n", "    ports: [@@tcp / 25]\n"))


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        os.remove(os.path.join(OUT, f))
    names = [n for n, _ in CASES]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        sys.exit(f"duplicate case names: {sorted(dupes)}")
    for name, data in CASES:
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
    print(f"{sum(1 for n in names if not n.endswith('.expect'))} topologies in {OUT}")


if __name__ == "__main__":
    main()
