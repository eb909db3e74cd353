"""The Container Storage Interface (CSI v1) endpoint: Hivemind's volumes for other orchestrators.

`manage.py csi` (started by `manage.py up` when HIVEMIND_CSI_SOCKET is set) serves the
Identity, Controller and Node services on a unix socket of this node, so Kubernetes (through
its CSI sidecars) or Nomad can create, attach, snapshot and expand Hivemind volumes in any
pool: local, btrfs, RBD.

- storage/csi/csi.proto: the services and messages, written from the published specification
  (package csi.v1, its field numbers); csi_pb2*.py are generated from it (`make csi-proto`).
- core.py: ids, access modes, sizes, topology, the caller's token and tenant, errors as gRPC codes.
- controller.py: the Controller service, on the platform's services (storage/services.py):
  every volume is a tenant's Volume row made by the same workflows as through the API, so it
  shows in the tenant's API and dashboard and counts against its quota.
- node.py: the Node service: stage = attach on this node (fencing a lost holder of a shared
  volume) and bind-mount at the staging path; publish = bind-mount into the target path.
- server.py: the gRPC servicers (thin: messages in and out) and the server.

Who may do what: the socket is the node's root's (mode 0600), like the kubelet's. Controller
calls that make, change or delete something carry an API token in their secrets (`token`:
a Kubernetes StorageClass's provisioner secret) and act as its user: the tenant named in the
`tenant` parameter must be one where that user may create volumes, and an id of a volume the
user cannot see is answered as if it did not exist. Node calls act on what the controller made.
"""
