"""Serve a synthetic flight as MPEG-TS over UDP on 127.0.0.1 (run by the streaming tests as a subprocess):
python udp_sender.py PORT SECONDS. Frames are paced at 30 fps, as a camera would send them."""

from __future__ import annotations

import sys
import time

import av
from stream_flight import FPS, codec_name, flight_frames


def main(port: int, seconds: float) -> None:
    n = int(seconds * FPS)
    with av.open(f"udp://127.0.0.1:{port}?pkt_size=1316", "w", format="mpegts") as out:
        st = out.add_stream(codec_name(), rate=FPS)
        st.height, st.width = 48, 64
        st.pix_fmt = "yuv420p"
        st.codec_context.gop_size = 10  # a keyframe (with SPS/PPS in band) every 1/3 s: a late receiver starts soon
        if codec_name() == "libx264":
            st.codec_context.options = {"tune": "zerolatency"}
        t0 = time.perf_counter()
        for i, rgb in enumerate(flight_frames(n)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            for pkt in st.encode(frame):
                out.mux(pkt)
            delay = t0 + (i + 1) / FPS - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        for pkt in st.encode(None):
            out.mux(pkt)


if __name__ == "__main__":
    main(int(sys.argv[1]), float(sys.argv[2]))
