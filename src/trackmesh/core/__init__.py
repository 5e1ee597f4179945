"""The protocol-neutral media core of trackmesh (sans-IO).

Nothing in this package imports asyncio, socket, time or threading (tests/core/test_sans_io.py
enforces it). Time is always a parameter ``now``: monotonic seconds as a float.

Model
-----
- :class:`~trackmesh.core.worker.MediaWorker`: one per worker process. Creates endpoints
  (each with a cluster-unique :data:`~trackmesh.core.ids.SessionId` and a signed, opaque
  ConnId), looks them up by ConnId (a forged or stale id is an ``UNKNOWN_CONN`` error), owns
  the worker's single timer (``next_deadline``/``handle_timeout``) and reports which endpoints
  have events pending (``take_ready``).
- :class:`~trackmesh.core.endpoint.Endpoint`: one per transport connection, bound to a
  (room, peer) by the ``Join`` control. It publishes RemoteTracks (media the client sends)
  and owns LocalTracks (media the server sends to the client).
- The cluster seam: endpoints never talk to each other. Room/peer/track info goes into a
  :class:`~trackmesh.core.registry.Registry` (key-value with prefix watches) and media into
  per-track channels of a :class:`~trackmesh.core.channel.ChannelHub` (pub/sub with a
  feedback path to the publisher). ``trackmesh.cluster.local`` implements both in process;
  the distributed implementation implements the same Protocols, so local and remote viewers
  take the same path.

The transport contract
----------------------
A transport (WebRTC/SDK, WHIP, WHEP, RTMP, SIP, MoQ...) owns the protocol and maps it onto
the core; the core knows no protocol.

1. On a new connection: ``endpoint = worker.create_endpoint()``; hand ``endpoint.conn_id``
   to the client. Later requests find it with ``worker.lookup(conn_id)``.
2. Client requests become controls (:mod:`trackmesh.core.controls`):
   ``err = endpoint.control(now, Join(room, peer, JoinOptions(...)))``. The result is ``None``
   or a :class:`~trackmesh.core.errors.ControlError` (code + message) that the transport maps
   to its protocol's error. Controls never raise on client input.
3. Media in: after ``Publish(track, kind)``, ``endpoint.remote_track(track).on_packet(pkt)``
   with one :class:`~trackmesh.core.model.MediaPacket` per received packet (hot path: no
   other allocation, no event).
4. Media out: after ``CreateLocalTrack(name, kind)`` the transport sets
   ``endpoint.local_track(name).sink = callable``; once a ``Subscribe``/``Switch`` control
   attaches it to a source, each of the source's packets is passed to the sink (the same
   MediaPacket object for every viewer: do not mutate it).
5. Events out: after every input, for each endpoint in ``worker.take_ready()``, drain
   ``endpoint.poll_event()`` until ``None`` and turn each event
   (:mod:`trackmesh.core.events`) into protocol messages: room events (peer/track
   joined/updated/left), LocalTrack state (waiting/active/inactive), ``KeyframeRequested``
   (ask the client for a key frame: PLI/FIR), ``BitrateTarget`` (e.g. REMB), ``Closed``.
6. Time: call ``worker.handle_timeout(now)`` when ``worker.next_deadline()`` passes.
7. When the connection ends: ``worker.close_endpoint(now, endpoint.session, reason)``; the
   core leaves the room and cascades (tracks stopped, viewers told).
"""
