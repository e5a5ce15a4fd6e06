package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ReleasePolicy says when a held Floating IP goes back to its pool.
// +kubebuilder:validation:Enum=OnPodDeletion;KeepForStatefulSet;Never
type ReleasePolicy string

const (
	// ReleaseOnPodDeletion releases the address when the pod that holds it is deleted or finishes (the default).
	ReleaseOnPodDeletion ReleasePolicy = "OnPodDeletion"
	// ReleaseKeepForStatefulSet keeps the address for a StatefulSet pod's name while the StatefulSet still
	// wants that ordinal, so a recreated pod gets its addresses back; other pods fall back to OnPodDeletion.
	ReleaseKeepForStatefulSet ReleasePolicy = "KeepForStatefulSet"
	// ReleaseNever keeps the address until an admin deletes the FloatingIP.
	ReleaseNever ReleasePolicy = "Never"
)

// IPRange is an inclusive range of addresses inside the pool's CIDR.
// +kubebuilder:validation:XValidation:rule="!isIP(self.start) || !isIP(self.end) || ip(self.start).family() == ip(self.end).family()",message="start and end must be of the same IP family"
// The order check turns IPv4 addresses into integers; CEL has no IP ordering and an IPv6 order check
// costs more than the API server allows, so braid-ipam-server reports an inverted IPv6 range on the pool.
// +kubebuilder:validation:XValidation:rule="!isIP(self.start) || !isIP(self.end) || ip(self.start).family() != 4 || ip(self.end).family() != 4 || (int(self.start.substring(0, self.start.indexOf('.'))) * 16777216 + int(self.start.substring(self.start.indexOf('.') + 1, self.start.indexOf('.', self.start.indexOf('.') + 1))) * 65536 + int(self.start.substring(self.start.indexOf('.', self.start.indexOf('.') + 1) + 1, self.start.lastIndexOf('.'))) * 256 + int(self.start.substring(self.start.lastIndexOf('.') + 1))) <= (int(self.end.substring(0, self.end.indexOf('.'))) * 16777216 + int(self.end.substring(self.end.indexOf('.') + 1, self.end.indexOf('.', self.end.indexOf('.') + 1))) * 65536 + int(self.end.substring(self.end.indexOf('.', self.end.indexOf('.') + 1) + 1, self.end.lastIndexOf('.'))) * 256 + int(self.end.substring(self.end.lastIndexOf('.') + 1)))",message="start must not be greater than end (inverted range)"
type IPRange struct {
	// Start is the first address of the range.
	// +kubebuilder:validation:MaxLength=45
	// +kubebuilder:validation:XValidation:rule="isIP(self)",message="start must be an IP address, e.g. 192.0.2.10 or 2001:db8:1::10"
	Start string `json:"start"`
	// End is the last address of the range (inclusive).
	// +kubebuilder:validation:MaxLength=45
	// +kubebuilder:validation:XValidation:rule="isIP(self)",message="end must be an IP address, e.g. 192.0.2.99 or 2001:db8:1::99"
	End string `json:"end"`
}

// Route is a route handed to pods together with their address.
type Route struct {
	// Dst is the destination, a CIDR such as 0.0.0.0/0 or 203.0.113.0/24.
	// +kubebuilder:validation:MaxLength=49
	// +kubebuilder:validation:XValidation:rule="isCIDR(self)",message="dst must be a CIDR, e.g. 203.0.113.0/24"
	Dst string `json:"dst"`
	// GW is the next hop; empty means the pool's gateway.
	// +optional
	// +kubebuilder:validation:MaxLength=45
	// +kubebuilder:validation:XValidation:rule="isIP(self)",message="gw must be an IP address"
	GW string `json:"gw,omitempty"`
}

// DNS is the resolver configuration handed to pods (CNI result "dns").
type DNS struct {
	// Nameservers are resolver addresses.
	// +optional
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:items:MaxLength=45
	// +kubebuilder:validation:items:XValidation:rule="isIP(self)",message="every nameserver must be an IP address"
	Nameservers []string `json:"nameservers,omitempty"`
	// Domain is the local domain.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	Domain string `json:"domain,omitempty"`
	// Search is the list of search domains.
	// +optional
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:items:MaxLength=253
	Search []string `json:"search,omitempty"`
	// Options are resolver options such as ndots:2.
	// +optional
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:items:MaxLength=64
	Options []string `json:"options,omitempty"`
}

// IPPoolSpec describes one subnet of the hosts' own network and which of its addresses braid may hand out.
// +kubebuilder:validation:XValidation:rule="!has(self.gateway) || !isCIDR(self.cidr) || !isIP(self.gateway) || ip(self.gateway).family() == cidr(self.cidr).ip().family()",message="gateway must be of the same IP family as cidr",fieldPath=".gateway"
// +kubebuilder:validation:XValidation:rule="!has(self.gateway) || !isCIDR(self.cidr) || !isIP(self.gateway) || ip(self.gateway).family() != cidr(self.cidr).ip().family() || cidr(self.cidr).containsIP(self.gateway)",message="gateway must lie inside cidr",fieldPath=".gateway"
// +kubebuilder:validation:XValidation:rule="!has(self.ranges) || !isCIDR(self.cidr) || self.ranges.all(r, !isIP(r.start) || !isIP(r.end) || (ip(r.start).family() == cidr(self.cidr).ip().family() && ip(r.end).family() == cidr(self.cidr).ip().family()))",message="every entry of ranges must be of the same IP family as cidr",fieldPath=".ranges"
// +kubebuilder:validation:XValidation:rule="!has(self.ranges) || !isCIDR(self.cidr) || self.ranges.all(r, !isIP(r.start) || !isIP(r.end) || ip(r.start).family() != cidr(self.cidr).ip().family() || ip(r.end).family() != cidr(self.cidr).ip().family() || (cidr(self.cidr).containsIP(r.start) && cidr(self.cidr).containsIP(r.end)))",message="every entry of ranges must lie inside cidr",fieldPath=".ranges"
// +kubebuilder:validation:XValidation:rule="!has(self.excludes) || !isCIDR(self.cidr) || self.excludes.all(x, isIP(x) ? ip(x).family() == cidr(self.cidr).ip().family() : (!isCIDR(x) || cidr(x).ip().family() == cidr(self.cidr).ip().family()))",message="every entry of excludes must be of the same IP family as cidr",fieldPath=".excludes"
// +kubebuilder:validation:XValidation:rule="!has(self.excludes) || !isCIDR(self.cidr) || self.excludes.all(x, isIP(x) ? (ip(x).family() != cidr(self.cidr).ip().family() || cidr(self.cidr).containsIP(x)) : (!isCIDR(x) || cidr(x).ip().family() != cidr(self.cidr).ip().family() || cidr(self.cidr).containsCIDR(x)))",message="every entry of excludes must lie inside cidr",fieldPath=".excludes"
// +kubebuilder:validation:XValidation:rule="!has(self.routes) || !isCIDR(self.cidr) || self.routes.all(r, !isCIDR(r.dst) || cidr(r.dst).ip().family() == cidr(self.cidr).ip().family())",message="every route dst must be of the same IP family as cidr",fieldPath=".routes"
// +kubebuilder:validation:XValidation:rule="!has(self.routes) || !isCIDR(self.cidr) || self.routes.all(r, !has(r.gw) || !isIP(r.gw) || ip(r.gw).family() == cidr(self.cidr).ip().family())",message="every route gw must be of the same IP family as cidr",fieldPath=".routes"
type IPPoolSpec struct {
	// CIDR is the pool's one subnet, e.g. 192.0.2.0/24 or 2001:db8:1::/64. A pool has exactly one family;
	// a dual-stack network names one IPv4 and one IPv6 pool.
	// +kubebuilder:validation:MaxLength=49
	// +kubebuilder:validation:XValidation:rule="isCIDR(self)",message="cidr must be exactly one CIDR, e.g. 192.0.2.0/24 or 2001:db8:1::/64 (a dual-stack network uses one pool per family)"
	// +kubebuilder:validation:XValidation:rule="!isCIDR(self) || cidr(self).masked().ip() == cidr(self).ip()",message="cidr must be a network address with no host bits set, e.g. 192.0.2.0/24 rather than 192.0.2.7/24"
	CIDR string `json:"cidr"`

	// Ranges limits allocation to these inclusive ranges inside cidr; empty means the whole cidr.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	Ranges []IPRange `json:"ranges,omitempty"`

	// Excludes lists addresses or CIDRs inside cidr that are never handed out (switch, router, hosts).
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=128
	// +kubebuilder:validation:items:MaxLength=49
	// +kubebuilder:validation:items:XValidation:rule="isIP(self) || isCIDR(self)",message="every entry of excludes must be an IP address or a CIDR"
	Excludes []string `json:"excludes,omitempty"`

	// Gateway is the default gateway handed to pods; it is never handed out as an address.
	// +optional
	// +kubebuilder:validation:MaxLength=45
	// +kubebuilder:validation:XValidation:rule="isIP(self)",message="gateway must be an IP address, e.g. 192.0.2.1"
	Gateway string `json:"gateway,omitempty"`

	// Routes are handed to pods with their address.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	Routes []Route `json:"routes,omitempty"`

	// DNS is handed to pods with their address.
	// +optional
	DNS *DNS `json:"dns,omitempty"`

	// VLAN is the VLAN id of this subnet on the underlay. Informational: braid does not tag traffic.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=4094
	VLAN *int32 `json:"vlan,omitempty"`

	// NodeSelector limits the pool to matching nodes (e.g. one pool per rack); empty means every node.
	// +optional
	NodeSelector *metav1.LabelSelector `json:"nodeSelector,omitempty"`

	// NamespaceSelector limits the pool to pods in matching namespaces; empty means every namespace.
	// +optional
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`

	// ReleasePolicy is the default for addresses of this pool: OnPodDeletion, KeepForStatefulSet or Never.
	// +optional
	// +kubebuilder:default=OnPodDeletion
	ReleasePolicy ReleasePolicy `json:"releasePolicy,omitempty"`

	// ReuseCooldown is how long a released address waits before it is handed out again, because switches
	// and peers cache ARP/ND entries. Least-recently-used addresses go first.
	// +optional
	// +kubebuilder:default="60s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Format=duration
	ReuseCooldown *metav1.Duration `json:"reuseCooldown,omitempty"`
}

// IPPoolStatus is kept true by braid-ipam-server.
type IPPoolStatus struct {
	// ObservedGeneration is the spec generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Total is the number of addresses the pool can hand out, in decimal (IPv6 pools exceed 64 bits).
	// +optional
	Total string `json:"total,omitempty"`
	// Used is the number of addresses held by FloatingIPs (bound, reserved or cooling down).
	// +optional
	Used int64 `json:"used"`
	// Free is Total minus Used, in decimal.
	// +optional
	Free string `json:"free,omitempty"`
	// Conditions: Ready, Exhausted.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// IPPool is a pool of Floating IPs from one of the hosts' own subnets.
// +kubebuilder:object:root=true
// +kubebuilder:validation:XValidation:rule="!has(self.spec) || !has(self.spec.cidr) || size(self.metadata.name) <= (self.spec.cidr.contains(':') ? 213 : 237)",message="metadata.name: at most 213 characters for an IPv6 pool, 237 for IPv4: each FloatingIP is named after its pool and address (e.g. mgmt-192-0-2-10) and object names end at 253"
// +kubebuilder:resource:scope=Cluster,shortName=ipp
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="CIDR",type=string,JSONPath=".spec.cidr"
// +kubebuilder:printcolumn:name="USED",type=integer,JSONPath=".status.used"
// +kubebuilder:printcolumn:name="FREE",type=string,JSONPath=".status.free"
// +kubebuilder:printcolumn:name="AGE",type=date,JSONPath=".metadata.creationTimestamp"
type IPPool struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   IPPoolSpec   `json:"spec"`
	Status IPPoolStatus `json:"status,omitempty"`
}

// IPPoolList is a list of IPPools.
// +kubebuilder:object:root=true
type IPPoolList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []IPPool `json:"items"`
}
