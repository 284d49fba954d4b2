#!/usr/bin/env python3
"""Copy a pcap (Ethernet, IPv4, UDP) dropping RTP packets, deterministically.

Every RTP packet (UDP, not port 5060/5061, version 2, not RTCP) is dropped with probability
LOSS, drawn from random.Random(SEED) in capture order. On top of that, the audio streams
(more than 20 packets, keyed by addresses, ports and SSRC, numbered in order of first
appearance) lose fixed packets by their number k: k % 5 == 0 the first packet, 1 the
second, 2 the last, 3 the first and second, 4 none besides the random ones. Prints one line
per stream: key, packets in, packets dropped, and which of first/second/last were dropped.

Usage: drop_rtp.py IN.pcap OUT.pcap --loss 0.02 --seed 2
"""
import argparse
import random
import struct


def read_pcap(path):
    data = open(path, "rb").read()
    magic = struct.unpack("<I", data[:4])[0]
    if magic != 0xA1B2C3D4:
        raise SystemExit(f"{path}: not a little-endian microsecond pcap")
    linktype = struct.unpack("<I", data[20:24])[0]
    if linktype != 1:
        raise SystemExit(f"{path}: link type {linktype}, want Ethernet")
    recs, off = [], 24
    while off + 16 <= len(data):
        incl = struct.unpack("<I", data[off + 8:off + 12])[0]
        recs.append(data[off:off + 16 + incl])
        off += 16 + incl
    return data[:24], recs


def rtp_key(rec):
    """(src, sport, dst, dport, ssrc) of an RTP packet, else None."""
    f = rec[16:]
    if len(f) < 14 + 20 + 8 + 12 or f[12:14] != b"\x08\x00":
        return None
    ip = f[14:]
    ihl = (ip[0] & 0x0F) * 4
    if ip[9] != 17 or struct.unpack(">H", ip[6:8])[0] & 0x3FFF:
        return None  # not UDP, or a fragment
    udp = ip[ihl:]
    sport, dport = struct.unpack(">HH", udp[:4])
    if {sport, dport} & {5060, 5061}:
        return None
    rtp = udp[8:]
    if len(rtp) < 12 or rtp[0] >> 6 != 2 or 192 <= rtp[1] <= 223:
        return None
    return (ip[12:16], sport, ip[16:20], dport, rtp[8:12])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("inp")
    ap.add_argument("out")
    ap.add_argument("--loss", type=float, required=True)
    ap.add_argument("--seed", type=int, required=True)
    a = ap.parse_args()
    head, recs = read_pcap(a.inp)
    rng = random.Random(a.seed)
    keys = [rtp_key(r) for r in recs]
    streams = {}
    for i, k in enumerate(keys):
        if k is not None:
            streams.setdefault(k, []).append(i)
    drop = {i for i, k in enumerate(keys) if k is not None and rng.random() < a.loss}
    audio = [k for k in streams if len(streams[k]) > 20]
    for n, k in enumerate(audio):
        idx = streams[k]
        forced = {0: [idx[0]], 1: [idx[1]], 2: [idx[-1]], 3: [idx[0], idx[1]], 4: []}[n % 5]
        drop.update(forced)
    with open(a.out, "wb") as o:
        o.write(head)
        for i, r in enumerate(recs):
            if i not in drop:
                o.write(r)
    for k, idx in streams.items():
        d = [i for i in idx if i in drop]
        where = [w for w, i in (("first", idx[0]), ("second", idx[1] if len(idx) > 1 else None), ("last", idx[-1])) if i in drop]
        src = ".".join(map(str, k[0]))
        dst = ".".join(map(str, k[2]))
        print(f"{src}:{k[1]} -> {dst}:{k[3]} ssrc 0x{k[4].hex()}: {len(idx)} packets, {len(d)} dropped {' '.join(where)}")


if __name__ == "__main__":
    main()
