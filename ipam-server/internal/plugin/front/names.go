package front

import (
	"strings"
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
		if !isDNS1123Label(label) {
			return append(msgs, dns1123SubdomainMsg)
		}
	}
	return msgs
}

// isDNS1123Label reports whether s is lower-case letters, digits and '-', starting and ending with a letter or
// digit (its length is the subdomain's concern).
func isDNS1123Label(s string) bool {
	alnum := func(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }
	if s == "" || !alnum(s[0]) || !alnum(s[len(s)-1]) {
		return false
	}
	for i := range len(s) {
		if !alnum(s[i]) && s[i] != '-' {
			return false
		}
	}
	return true
}
