package front

import (
	"strings"

	"github.com/braid-cni/braid/crds/selection"
)

// dns1123SubdomainMsg is apimachinery's message for a name that is not a DNS-1123 subdomain, the rule for an
// IPPool's name.
const dns1123SubdomainMsg = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', " +
	"and must start and end with an alphanumeric character (e.g. 'example.com')"

// isDNS1123Subdomain is k8s.io/apimachinery's IsDNS1123Subdomain (the fuzz test holds it to that) without
// linking apimachinery, whose regular expressions compile at every start of braid-ipam: the messages for
// name, none when it is valid.
func isDNS1123Subdomain(name string) []string {
	var msgs []string
	if len(name) > 253 {
		msgs = append(msgs, "must be no more than 253 characters")
	}
	for label := range strings.SplitSeq(name, ".") {
		if !selection.HasDNS1123LabelForm(label) {
			return append(msgs, dns1123SubdomainMsg)
		}
	}
	return msgs
}
