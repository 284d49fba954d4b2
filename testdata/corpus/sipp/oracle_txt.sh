#!/bin/bash
# Writes the F.oracle.txt of a capture F to stdout: the three tshark runs of testdata/README.md
# (no decode-as rule), in the layout of the existing oracles.
set -eu
F=${1:?usage: oracle_txt.sh F}
echo "# oracle for $(basename "$F")"
echo "# $(tshark --version | head -1)"
echo "# decode-as: none"
echo
echo "## tshark -n -r F -q -z sip,stat"
tshark -n -r "$F" -q -z sip,stat
echo
echo "## tshark -n -r F -Y sip -T fields -E occurrence=a -E aggregator=~ (per SIP message)"
printf '# %s\n' "$(printf '%s\t' frame.number frame.time_epoch frame.time_relative ip.src ip.dst ipv6.src ipv6.dst sip.Call-ID sip.Method sip.Status-Code sip.CSeq.seq sip.CSeq.method sip.from.user sip.to.user sip.from.tag sip.to.tag sdp.connection_info.address sdp.media.port sdp.media_attr | sed 's/\t$//')"
tshark -n -r "$F" -Y sip -T fields -E separator=/t -E occurrence=a -E aggregator='~' \
  -e frame.number -e frame.time_epoch -e frame.time_relative -e ip.src -e ip.dst \
  -e ipv6.src -e ipv6.dst -e sip.Call-ID -e sip.Method -e sip.Status-Code -e sip.CSeq.seq \
  -e sip.CSeq.method -e sip.from.user -e sip.to.user -e sip.from.tag -e sip.to.tag \
  -e sdp.connection_info.address -e sdp.media.port -e sdp.media_attr
echo
echo "## tshark -n -r F -q -o rtp.heuristic_rtp:TRUE -z rtp,streams"
tshark -n -r "$F" -q -o rtp.heuristic_rtp:TRUE -z rtp,streams
