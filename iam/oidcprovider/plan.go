package oidcprovider

import (
	"fmt"
	"slices"
	"strings"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/iam"
)

// Drift kinds: what a plan found different from the desired state.
const (
	DriftMissing     = "missing" // no provider for the URL: it will be created
	DriftThumbprints = "thumbprints"
	DriftAudiences   = "audiences"
	DriftTags        = "tags"
)

// DriftKinds lists every drift kind, in the order plans report them.
func DriftKinds() []string {
	return []string{DriftMissing, DriftThumbprints, DriftAudiences, DriftTags}
}

// Plan is what Apply changes to bring the provider to Desired.
type Plan struct {
	Desired Desired
	// Current is the registered provider; nil when there is none.
	Current *Provider
	// ARN is the provider's; empty for a creation until Apply has run.
	ARN string
	// Create: there is no provider for the URL; Apply creates it with Desired's audiences and
	// tags and with Thumbprints.
	Create bool
	// Thumbprints is the complete list to register (UpdateOpenIDConnectProviderThumbprint
	// replaces the whole list); nil when the registered list is already right.
	Thumbprints []string
	// DroppedThumbprints are registered thumbprints that Thumbprints leaves out.
	DroppedThumbprints []string
	// AddAudiences and RemoveAudiences are the client IDs to add and remove.
	AddAudiences, RemoveAudiences []string
	// SetTags are the keys of Desired.Tags to set, in order.
	SetTags []string
}

// plan compares d (normalized) with current (nil: absent).
func plan(d Desired, current *Provider) *Plan {
	p := &Plan{Desired: d, Current: current}
	if current == nil {
		p.Create = true
		p.Thumbprints = d.Thumbprints
		return p
	}
	p.ARN = current.ARN

	registered := make([]string, 0, len(current.Thumbprints))
	for _, t := range current.Thumbprints {
		registered = append(registered, strings.ToLower(t)) // IAM compares hex case-insensitively
	}
	want := slices.Clone(d.Thumbprints)
	if !d.PruneThumbprints {
		for _, t := range registered {
			if !slices.Contains(want, t) {
				want = append(want, t) // registered ones keep their order: newest first
			}
		}
	}
	if len(want) > iam.MaxThumbprints {
		want = want[:iam.MaxThumbprints]
	}
	for _, t := range registered {
		if !slices.Contains(want, t) {
			p.DroppedThumbprints = append(p.DroppedThumbprints, t)
		}
	}
	if !sameSet(want, registered) {
		p.Thumbprints = want
	}

	for _, a := range d.Audiences {
		if !slices.Contains(current.Audiences, a) {
			p.AddAudiences = append(p.AddAudiences, a)
		}
	}
	for _, a := range current.Audiences {
		if !slices.Contains(d.Audiences, a) {
			p.RemoveAudiences = append(p.RemoveAudiences, a)
		}
	}

	for _, k := range sortedKeys(d.Tags) {
		if v, ok := lookupTag(current.Tags, k); !ok || v != d.Tags[k] {
			p.SetTags = append(p.SetTags, k)
		}
	}
	return p
}

// lookupTag finds key in tags the way IAM matches tag keys: ignoring case.
func lookupTag(tags map[string]string, key string) (string, bool) {
	if v, ok := tags[key]; ok {
		return v, true
	}
	for k, v := range tags {
		if strings.EqualFold(k, key) {
			return v, true
		}
	}
	return "", false
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

// Drift lists the kinds of difference found (DriftKinds order); empty when up to date.
func (p *Plan) Drift() []string {
	if p.Create {
		return []string{DriftMissing}
	}
	var kinds []string
	if p.Thumbprints != nil {
		kinds = append(kinds, DriftThumbprints)
	}
	if len(p.AddAudiences)+len(p.RemoveAudiences) > 0 {
		kinds = append(kinds, DriftAudiences)
	}
	if len(p.SetTags) > 0 {
		kinds = append(kinds, DriftTags)
	}
	return kinds
}

// UpToDate reports whether Apply has nothing to do.
func (p *Plan) UpToDate() bool { return len(p.Drift()) == 0 }

// String describes the plan for people, one change per line.
func (p *Plan) String() string {
	var b strings.Builder
	d := p.Desired
	list := func(s []string) string {
		if len(s) == 0 {
			return "(none)"
		}
		return strings.Join(s, ", ")
	}
	if p.Create {
		fmt.Fprintf(&b, "create OIDC provider %s\n", d.URL)
		fmt.Fprintf(&b, "  audiences:   %s\n", list(d.Audiences))
		fmt.Fprintf(&b, "  thumbprints: %s\n", list(p.Thumbprints))
		if tags := d.creationTags(); len(tags) > 0 {
			fmt.Fprintf(&b, "  tags:        %s\n", tagsString(tags, sortedKeys(tags)))
		}
		return b.String()
	}
	if p.UpToDate() {
		fmt.Fprintf(&b, "OIDC provider %s is up to date\n", p.ARN)
		fmt.Fprintf(&b, "  audiences:   %s\n", list(p.Current.Audiences))
		fmt.Fprintf(&b, "  thumbprints: %s\n", list(p.Current.Thumbprints))
		return b.String()
	}
	fmt.Fprintf(&b, "update OIDC provider %s\n", p.ARN)
	if p.Thumbprints != nil {
		fmt.Fprintf(&b, "  thumbprints: %s -> %s", list(p.Current.Thumbprints), list(p.Thumbprints))
		if len(p.DroppedThumbprints) > 0 {
			fmt.Fprintf(&b, " (dropping %s)", list(p.DroppedThumbprints))
		}
		b.WriteString("\n")
	}
	for _, a := range p.AddAudiences {
		fmt.Fprintf(&b, "  audience:    add %s\n", a)
	}
	for _, a := range p.RemoveAudiences {
		fmt.Fprintf(&b, "  audience:    remove %s\n", a)
	}
	if len(p.SetTags) > 0 {
		fmt.Fprintf(&b, "  tags:        set %s\n", tagsString(d.Tags, p.SetTags))
	}
	return b.String()
}

func tagsString(tags map[string]string, keys []string) string {
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+"="+tags[k])
	}
	return strings.Join(parts, ", ")
}
