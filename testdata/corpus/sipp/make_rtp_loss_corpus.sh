#!/bin/bash
# Make sipp_g711_concurrent12.pcap: 12 concurrent G.711A calls (SIPp `uac_pcap_short.xml`,
# the built-in uac_pcap with an 80-packet cut of the G.711A recording, against `-sn uas
# -rtp_echo`), between two network namespaces of their own (rtpacct-a / rtpacct-b, veth
# rtpacct-va / rtpacct-vb, 198.19.77.1 and .2 only), captured with tshark on the UAC side.
# Then the lossy copies (drop_rtp.py, seeded) and the tshark oracles of all three.
# Run as root: make_rtp_loss_corpus.sh OUTDIR
set -eu
OUT=$(realpath "${1:?usage: make_rtp_loss_corpus.sh OUTDIR}"); mkdir -p "$OUT"
SC=$(cd "$(dirname "$0")" && pwd)
NA=rtpacct-a NB=rtpacct-b VA=rtpacct-va VB=rtpacct-vb CIP=198.19.77.1 SIP=198.19.77.2
A="ip netns exec $NA"; B="ip netns exec $NB"
W=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  ip netns del $NA 2>/dev/null || true; ip netns del $NB 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT

# The media SIPp plays: the first 80 packets (2.4 s) of Debian sip-tester's G.711A recording,
# and its DTMF '1' as is.
mkdir -p "$W/pcap"
editcap -F pcap -r /usr/share/sip-tester/g711a.pcap "$W/pcap/g711a_80.pcap" 1-80
ln -s /usr/share/sip-tester/dtmf_2833_1.pcap "$W/pcap/dtmf_2833_1.pcap"

ip netns add $NA; ip netns add $NB
ip link add $VA type veth peer name $VB
ip link set $VA netns $NA; ip link set $VB netns $NB
for n in $NA $NB; do ip netns exec $n sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1; done
$A ip addr add $CIP/30 dev $VA; $B ip addr add $SIP/30 dev $VB
$A ip link set lo up; $B ip link set lo up; $A ip link set $VA up; $B ip link set $VB up

CAP=$OUT/sipp_g711_concurrent12.pcap
$A tshark -n -i $VA -F pcap -w "$CAP" -q 2>"$W/tshark.log" & PIDS+=($!); TP=$!
sleep 3
$B sipp -i $SIP -p 5060 -mi $SIP -mp 6000 -nostdin -timeout 60s -sn uas -rtp_echo >"$W/uas.log" 2>&1 & PIDS+=($!); UP=$!
sleep 1
(cd "$W" && $A sipp $SIP:5060 -i $CIP -p 5061 -mi $CIP -nostdin -timeout 60s \
   -sf "$SC/uac_pcap_short.xml" -m 12 -l 12 -r 12 -rp 1000 >"$W/uac.log" 2>&1) || { cat "$W/uac.log"; exit 1; }
sleep 2; kill $UP; wait $UP 2>/dev/null || true
sleep 1; kill -INT $TP; wait $TP || true

python3 "$SC/drop_rtp.py" "$CAP" "$OUT/sipp_g711_concurrent12_loss2.pcap" --loss 0.02 --seed 2
python3 "$SC/drop_rtp.py" "$CAP" "$OUT/sipp_g711_concurrent12_loss10.pcap" --loss 0.10 --seed 10
for f in sipp_g711_concurrent12 sipp_g711_concurrent12_loss2 sipp_g711_concurrent12_loss10; do
  "$SC/oracle_txt.sh" "$OUT/$f.pcap" > "$OUT/$f.pcap.oracle.txt"
done
