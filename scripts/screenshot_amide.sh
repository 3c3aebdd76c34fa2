#!/usr/bin/env bash
# Screenshot AMIDE (a DICOM viewer sirtjax did not write) showing rtdose.dcm over the CT series it
# references, headless: scripts/screenshot_amide.sh RTSTRUCT_DIR OUT.png
# RTSTRUCT_DIR is the rtstruct/ folder of `sirtjax plan|verify --rtdose-bits 16` (ct/ and rtdose.dcm):
# AMIDE 1.0.6 aborts on 32-bit RT Dose pixel data. AMIDE places both series by their own DICOM
# geometry (Image Position/Orientation, Pixel Spacing, Grid Frame Offset Vector); the script only
# ticks both data sets, gives the dose the 'hot metal' colour table at 50 % of its maximum and zooms.
# The clicks are screen positions in AMIDE 1.0.6 (Debian 12) on a 1900x1000 Xvfb screen.
# Needs: apt-get install -y amide xvfb xdotool imagemagick
set -euo pipefail
if [ $# -ne 2 ]; then
  echo "usage: $0 RTSTRUCT_DIR OUT.png" >&2
  exit 2
fi
src=$(realpath "$1")
out=$(realpath -m "$2")
[ -d "$src/ct" ] && [ -f "$src/rtdose.dcm" ] || { echo "$1: no ct/ folder and rtdose.dcm (the rtstruct/ folder of a plan)" >&2; exit 2; }
for tool in amide xvfb-run xdotool import; do
  command -v "$tool" >/dev/null || { echo "$tool is not installed (apt-get install -y amide xvfb xdotool imagemagick)" >&2; exit 3; }
done
bits=$(python3 - "$src/rtdose.dcm" <<'EOF'
import struct, sys
data = open(sys.argv[1], "rb").read()
i = data.find(b"\x28\x00\x00\x01US")  # (0028,0100) Bits Allocated, explicit VR little endian
print(struct.unpack("<H", data[i + 8:i + 10])[0] if i >= 0 else 0)
EOF
)
[ "$bits" = 16 ] || { echo "$1/rtdose.dcm: $bits-bit RT Dose; AMIDE reads 16-bit only (sirtjax plan --rtdose-bits 16)" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$src/ct" "$work/ct"  # one series per folder: AMIDE asks no question about the others
mkdir "$work/dose" && cp "$src/rtdose.dcm" "$work/dose/"
first=$(find "$work/ct" -maxdepth 1 -type f -printf '%f\n' -quit)
cat > "$work/drive.sh" <<EOF
set -e
amide "$work/ct/$first" "$work/dose/rtdose.dcm" >"$work/amide.log" 2>&1 &
for i in \$(seq 60); do xdotool search --name "^Study:" >/dev/null 2>&1 && break; sleep 1; done
sleep 3
xdotool mousemove 64 123 click 1; sleep 2                       # tick the CT
xdotool mousemove 64 151 click 1; sleep 3                       # tick the dose
xdotool mousemove 140 151 click 3; sleep 4                      # the dose's data set dialog
xdotool mousemove 348 16 click 1; sleep 2                       # Colormap/Threshold tab
xdotool mousemove 211 74 click 1; xdotool key ctrl+a; xdotool type 50; xdotool key Return; sleep 2
xdotool mousemove 297 146 click 1; sleep 2                      # colour table list
xdotool mousemove 215 397 click 1; sleep 2                      # hot metal
xdotool mousemove 677 490 click 1; sleep 2                      # close the dialog
xdotool mousemove 612 45 click 1; xdotool key ctrl+a; xdotool type 3; xdotool key Return; sleep 6  # zoom 3
import -window "\$(xdotool search --name '^Study:' | head -1)" "$out"
kill %1
EOF
rm -f "$out"
timeout 180 xvfb-run -a -s "-screen 0 1900x1000x24" bash "$work/drive.sh" || true
[ -s "$out" ] || { echo "$1: AMIDE gave no screenshot ($(tail -1 "$work/amide.log" 2>/dev/null))" >&2; exit 1; }
echo "$out"
