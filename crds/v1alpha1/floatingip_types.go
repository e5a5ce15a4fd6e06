package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// FloatingIPPhase says what a FloatingIP is doing with its address. It is empty while the address is held: by
// the pod of spec.podUID, or, with no podUID, reserved for the pod named by spec.pod (a StatefulSet ordinal, an
// admin's reservation). Writing a phase at every allocation would double its API writes.
// +kubebuilder:validation:Enum=Released
type FloatingIPPhase string

// FloatingIPReleased means the address is cooling down before the pool may hand it out again.
const FloatingIPReleased FloatingIPPhase = "Released"

// FloatingIPSpec records who holds one address of an IPPool. The object's name is derived from the pool and
// the address, so the API server itself refuses a second holder of the same address.
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.ip) || self.ip == oldSelf.ip",message="ip is immutable; delete the FloatingIP and create another"
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.pool) || self.pool == oldSelf.pool",message="pool is immutable; delete the FloatingIP and create another"
type FloatingIPSpec struct {
	// IP is the held address.
	// +kubebuilder:validation:MaxLength=45
	// +kubebuilder:validation:XValidation:rule="isIP(self)",message="ip must be an IP address, e.g. 192.0.2.10"
	IP string `json:"ip"`

	// Pool is the name of the IPPool the address belongs to.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Pool string `json:"pool"`

	// Pod is the holder as namespace/name; empty for a reservation no pod holds yet.
	// +optional
	// +kubebuilder:validation:MaxLength=317
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	Pod string `json:"pod,omitempty"`

	// PodUID is the holding pod's UID; empty for a StatefulSet ordinal or an admin reservation by name.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	PodUID string `json:"podUID,omitempty"`

	// Interface is the pod interface the address is for, e.g. net1.
	// +optional
	// +kubebuilder:validation:MaxLength=15
	Interface string `json:"interface,omitempty"`

	// Network is the NetworkAttachmentDefinition (namespace/name) the address was allocated for.
	// +optional
	// +kubebuilder:validation:MaxLength=317
	Network string `json:"network,omitempty"`

	// Node is the node the holding pod runs on.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	Node string `json:"node,omitempty"`

	// ReleasePolicy overrides the pool's policy for this address. A FloatingIP made by hand with no pod is an
	// admin reservation and is never handed out to anyone else.
	// +optional
	ReleasePolicy ReleasePolicy `json:"releasePolicy,omitempty"`
}

// FloatingIPStatus is written by braid-ipam-server.
type FloatingIPStatus struct {
	// Phase is Released while the address cools down; empty while it is held.
	// +optional
	Phase FloatingIPPhase `json:"phase,omitempty"`
	// ReleasedAt is when the address was released; it is reusable once the pool's cool-down has passed.
	// +optional
	ReleasedAt *metav1.Time `json:"releasedAt,omitempty"`
}

// FloatingIP is one address held from an IPPool.
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=fip
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="IP",type=string,JSONPath=".spec.ip"
// +kubebuilder:printcolumn:name="POOL",type=string,JSONPath=".spec.pool"
// +kubebuilder:printcolumn:name="POD",type=string,JSONPath=".spec.pod"
// +kubebuilder:printcolumn:name="INTERFACE",type=string,JSONPath=".spec.interface"
// +kubebuilder:printcolumn:name="NODE",type=string,JSONPath=".spec.node"
// +kubebuilder:printcolumn:name="PHASE",type=string,JSONPath=".status.phase"
// +kubebuilder:printcolumn:name="AGE",type=date,JSONPath=".metadata.creationTimestamp"
type FloatingIP struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   FloatingIPSpec   `json:"spec"`
	Status FloatingIPStatus `json:"status,omitempty"`
}

// FloatingIPList is a list of FloatingIPs.
// +kubebuilder:object:root=true
type FloatingIPList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []FloatingIP `json:"items"`
}
