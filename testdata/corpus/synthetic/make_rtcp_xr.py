#!/usr/bin/env python3
"""Writes synthetic_rtcp_xr.pcap: one SIP call over UDP with RTP both ways and compound
RTCP carrying RTCP-XR VoIP Metrics blocks (RFC 3611 §4.7), for the CDR's far-end view.

Python standard library only; the output is byte-for-byte the same on every run.

  python3 make_rtcp_xr.py OUT.pcap

The call (Ethernet/IPv4/UDP, times from 2026-12-01 10:00:00 UTC):
  * 192.0.2.10:5060 (alice) INVITE with SDP (c=192.0.2.10, m=audio 40000, PCMU/8000,
    ptime 20) -> 192.0.2.20:5060 (bob); 200 OK with SDP (c=192.0.2.20, m=audio 50000);
    ACK; after the media, alice's BYE and bob's 200.
  * RTP PCMU, 20 ms, 250 packets sent each way, exactly periodic (no jitter):
    alice -> bob SSRC 0x1a2b3c4d from 40000 to 50000, packets 50, 51, 100, 150, 200 left
    out (5 lost of 250, 2 %); bob -> alice SSRC 0x5e6f7081 from 50000 to 40000, none lost.
  * RTCP to the RTP port + 1, compound RR + SDES (CNAME) + XR:
    - bob (50001 -> 40001) at +2 s and +4 s: an RR with one report block about 0x1a2b3c4d
      (its loss so far) and an XR VoIP Metrics block about 0x1a2b3c4d; the two XR blocks
      differ (the second is the latest); loss rate 5/256 (agrees with the 2 % on the wire).
    - alice (40001 -> 50001) at +2.5 s and +4.5 s: an RR with no report block and an XR
      VoIP Metrics block about 0x5e6f7081 only: loss rate 26/256 (10.2 %, while nothing is
      lost on the wire), the latest with R factor, external R, MOS-LQ and MOS-CQ 127
      (unavailable).
"""
import struct
import sys

T0 = 1_796_119_200.0  # 2026-12-01 10:00:00 UTC
ALICE, BOB = "192.0.2.10", "192.0.2.20"
MAC_A, MAC_B = bytes.fromhex("020000000a0a"), bytes.fromhex("020000001414")
SSRC_A, SSRC_B = 0x1A2B3C4D, 0x5E6F7081
PACKETS = 250
DROPPED_A = {50, 51, 100, 150, 200}
SEQ0_A, SEQ0_B = 1000, 30000
TS0_A, TS0_B = 160_000, 480_000
CALL_ID = "xr-call-1@192.0.2.10"


def ip4(a):
    return bytes(int(x) for x in a.split("."))


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def frame(src, sport, dst, dport, payload):
    udp_len = 8 + len(payload)
    pseudo = ip4(src) + ip4(dst) + struct.pack("!BBH", 0, 17, udp_len)
    udp = struct.pack("!HHHH", sport, dport, udp_len, 0) + payload
    c = csum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", c) + udp[8:]
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, 0, 0x4000, 64, 17, 0,
                      ip4(src), ip4(dst))
    hdr = hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:]
    macs = (MAC_B + MAC_A) if src == ALICE else (MAC_A + MAC_B)
    return macs + b"\x08\x00" + hdr + udp


def sdp(user, addr, port):
    return (f"v=0\r\no={user} 1 1 IN IP4 {addr}\r\ns=-\r\nc=IN IP4 {addr}\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\n"
            "a=sendrecv\r\n")


def sip(first, headers, body=""):
    h = [first] + headers
    if body:
        h.append("Content-Type: application/sdp")
    h.append(f"Content-Length: {len(body.encode())}")
    return ("\r\n".join(h) + "\r\n\r\n" + body).encode()


FROM = f"From: <sip:alice@{ALICE}>;tag=a1"
TO = f"To: <sip:bob@{BOB}>"
TO_T = TO + ";tag=b1"


def via(branch):
    return f"Via: SIP/2.0/UDP {ALICE}:5060;branch=z9hG4bK-{branch}"


def rtp(seq, ts, ssrc):
    return struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + b"\xff" * 160


def rr(sender, blocks):
    body = struct.pack("!I", sender) + b"".join(blocks)
    return struct.pack("!BBH", 0x80 | len(blocks), 201, len(body) // 4) + body


def report_block(ssrc, fraction, cum_lost, ext_high):
    return struct.pack("!IBBHIIII", ssrc, fraction, (cum_lost >> 16) & 0xFF,
                       cum_lost & 0xFFFF, ext_high, 0, 0, 0)


def sdes(ssrc, cname):
    item = bytes([1, len(cname)]) + cname
    chunk = struct.pack("!I", ssrc) + item + b"\0"
    chunk += b"\0" * (-len(chunk) % 4)
    return struct.pack("!BBH", 0x81, 202, len(chunk) // 4) + chunk


# The VoIP Metrics fields in wire order (RFC 3611 §4.7), the reserved byte after
# rx_config left out.
XR_FIELDS = ("ssrc loss discard burst_density gap_density burst_ms gap_ms rt_ms es_ms signal "
             "noise rerl gmin r ext_r mos_lq mos_cq rx_config jb_nominal jb_max "
             "jb_abs_max").split()


def xr_voip(sender, m):
    v = [m[k] for k in XR_FIELDS]
    block = struct.pack("!BBHIBBBBHHHHbbBBBBBBBBHHH", 7, 0, 8, *v[:18], 0, *v[18:])
    body = struct.pack("!I", sender) + block
    return struct.pack("!BBH", 0x80, 207, len(body) // 4) + body


def xr_blocks(*rows):
    return [dict(zip(XR_FIELDS, r)) for r in rows]


# bob's reports about alice's stream, +2 s and +4 s
XR_TO_BOB = xr_blocks(
    (SSRC_A, 5, 3, 64, 2, 40, 1500, 42, 65, -20, -60, 127, 16, 87, 127, 41, 40, 0xF3, 40, 80, 200),
    (SSRC_A, 5, 4, 51, 3, 60, 1800, 44, 66, -21, -61, 127, 16, 85, 90, 40, 39, 0xF3, 40, 80, 200),
)
# alice's reports about bob's stream, +2.5 s and +4.5 s; the latest marks R, external R,
# MOS-LQ and MOS-CQ unavailable (127)
XR_TO_ALICE = xr_blocks(
    (SSRC_B, 20, 9, 180, 4, 100, 700, 43, 70, -22, -58, 127, 16, 70, 127, 35, 34, 0x80, 60, 120,
     300),
    (SSRC_B, 26, 13, 200, 5, 120, 900, 0, 0, 127, 127, 127, 16, 127, 127, 127, 127, 0x80, 60, 120,
     300),
)


def packets():
    out = []
    invite_sdp = sdp("alice", ALICE, 40000)
    out.append((0.0, ALICE, 5060, BOB, 5060, sip(
        f"INVITE sip:bob@{BOB} SIP/2.0",
        [via("inv1"), "Max-Forwards: 70", FROM, TO, f"Call-ID: {CALL_ID}", "CSeq: 1 INVITE",
         f"Contact: <sip:alice@{ALICE}:5060>"], invite_sdp)))
    out.append((0.05, BOB, 5060, ALICE, 5060, sip(
        "SIP/2.0 200 OK",
        [via("inv1"), FROM, TO_T, f"Call-ID: {CALL_ID}", "CSeq: 1 INVITE",
         f"Contact: <sip:bob@{BOB}:5060>"], sdp("bob", BOB, 50000))))
    out.append((0.06, ALICE, 5060, BOB, 5060, sip(
        f"ACK sip:bob@{BOB}:5060 SIP/2.0",
        [via("ack1"), "Max-Forwards: 70", FROM, TO_T, f"Call-ID: {CALL_ID}",
         "CSeq: 1 ACK"])))
    for i in range(PACKETS):
        if i not in DROPPED_A:
            out.append((0.1 + i * 0.02, ALICE, 40000, BOB, 50000,
                        rtp(SEQ0_A + i, TS0_A + 160 * i, SSRC_A)))
        out.append((0.105 + i * 0.02, BOB, 50000, ALICE, 40000,
                    rtp(SEQ0_B + i, TS0_B + 160 * i, SSRC_B)))
    for n, (at, m) in enumerate(zip((2.0, 4.0), XR_TO_BOB)):
        # Alice's packets sent before `at`: index i leaves at 0.1 + 0.02 i.
        sent = [i for i in range(PACKETS) if 0.1 + i * 0.02 < at]
        highest = max(i for i in sent if i not in DROPPED_A)
        lost = sum(1 for i in DROPPED_A if i <= highest)
        # Fraction lost since the previous report (RFC 3550 §6.4.1), in 1/256.
        prev = [i for i in range(PACKETS) if 0.1 + i * 0.02 < (2.0 if n else 0.0)]
        prev_high = max([i for i in prev if i not in DROPPED_A], default=-1)
        lost_int = sum(1 for i in DROPPED_A if prev_high < i <= highest)
        fraction = lost_int * 256 // (highest - prev_high)
        payload = (rr(SSRC_B, [report_block(SSRC_A, fraction, lost, SEQ0_A + highest)])
                   + sdes(SSRC_B, b"bob@192.0.2.20") + xr_voip(SSRC_B, m))
        out.append((at, BOB, 50001, ALICE, 40001, payload))
    for at, m in zip((2.5, 4.5), XR_TO_ALICE):
        payload = rr(SSRC_A, []) + sdes(SSRC_A, b"alice@192.0.2.10") + xr_voip(SSRC_A, m)
        out.append((at, ALICE, 40001, BOB, 50001, payload))
    out.append((5.3, ALICE, 5060, BOB, 5060, sip(
        f"BYE sip:bob@{BOB}:5060 SIP/2.0",
        [via("bye1"), "Max-Forwards: 70", FROM, TO_T, f"Call-ID: {CALL_ID}",
         "CSeq: 2 BYE"])))
    out.append((5.31, BOB, 5060, ALICE, 5060, sip(
        "SIP/2.0 200 OK",
        [via("bye1"), FROM, TO_T, f"Call-ID: {CALL_ID}", "CSeq: 2 BYE"])))
    out.sort(key=lambda p: p[0])
    return out


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "synthetic_rtcp_xr.pcap"
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for at, src, sport, dst, dport, payload in packets():
            data = frame(src, sport, dst, dport, payload)
            us = round((T0 + at) * 1_000_000)
            f.write(struct.pack("<IIII", us // 1_000_000, us % 1_000_000, len(data), len(data)))
            f.write(data)


if __name__ == "__main__":
    main()
