// Package v1alpha1 holds braid's API types, group braid.dev, version v1alpha1: IPPool (a pool of Floating
// IPs taken from one of the hosts' own subnets) and FloatingIP (one held address). Both are cluster-scoped.
//
// Validation lives in the schema (OpenAPI and CEL markers below), so `kubectl apply` refuses a bad pool with
// a message that names the field; the IPAM server re-checks nothing the API server already guarantees.
//
// +kubebuilder:object:generate=true
// +groupName=braid.dev
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the API group and version of braid's own objects.
	GroupVersion = schema.GroupVersion{Group: "braid.dev", Version: "v1alpha1"}

	schemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds braid's types to a runtime.Scheme.
	AddToScheme = schemeBuilder.AddToScheme
)

// addKnownTypes keeps this package free of controller-runtime so clients can import the API cheaply.
func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &IPPool{}, &IPPoolList{}, &FloatingIP{}, &FloatingIPList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
