#!/bin/bash
# Writes synthetic_rtcp_xr.pcap and its oracle synthetic_rtcp_xr.pcap.oracle.txt into OUTDIR
# (testdata/corpus when run from there with `synthetic/make_rtcp_xr.sh .`): the capture from
# make_rtcp_xr.py, the oracle from tshark only (sipp/oracle_txt.sh's three sections, then
# tshark's decoding of every XR VoIP Metrics block).
set -eu
OUT=${1:?usage: make_rtcp_xr.sh OUTDIR}
HERE=$(cd "$(dirname "$0")" && pwd)
F="$OUT/synthetic_rtcp_xr.pcap"
python3 "$HERE/make_rtcp_xr.py" "$F"
XR_FIELDS="frame.number frame.time_epoch ip.src udp.srcport ip.dst udp.dstport rtcp.senderssrc
rtcp.ssrc.identifier rtcp.ssrc.fraction rtcp.ssrc.discarded rtcp.xr.voipmetrics.burstdensity
rtcp.xr.voipmetrics.gapdensity rtcp.xr.voipmetrics.rtdelay rtcp.xr.voipmetrics.esdelay
rtcp.xr.voipmetrics.rfactor rtcp.xr.voipmetrics.extrfactor rtcp.xr.voipmetrics.moslq
rtcp.xr.voipmetrics.moscq"
{
  "$HERE/../sipp/oracle_txt.sh" "$F"
  echo
  # Each XR of this capture is the last packet of its compound datagram and holds one VoIP
  # Metrics block, so the last occurrence of the fields the RR, SDES and XR dissectors share
  # (rtcp.senderssrc, rtcp.ssrc.identifier, rtcp.ssrc.fraction) is the XR's.
  echo "## tshark -n -r F -Y 'rtcp.xr.bt == 7' -T fields -E occurrence=l (per XR VoIP Metrics block)"
  printf '# %s\n' "$(echo $XR_FIELDS | tr ' ' '\t')"
  args=()
  for f in $XR_FIELDS; do args+=(-e "$f"); done
  tshark -n -r "$F" -Y 'rtcp.xr.bt == 7' -T fields -E separator=/t -E occurrence=l "${args[@]}"
} > "$F.oracle.txt"
