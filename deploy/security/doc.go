// Package security holds the tests of braid's security model (deploy/SECURITY.md) against the real thing:
// deploy/base applied with `kubectl apply -k` to a real kube-apiserver (envtest), requests made as braid's
// ServiceAccounts (impersonated, and with real pod-bound tokens), and braid's binaries run as the node and
// the cluster run them, with their files, logs and listeners inspected.
package security
