package lifecycle

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys/sourcetest"
)

// TestSourceConformance runs the keys.Source conformance suite over the state Secret of the shared
// test cluster (a namespace per harness). A key written with its private key is a staged record,
// the others are previous records (retained keys); a missing state Secret is the empty state, as
// Manager.Source documents.
func TestSourceConformance(t *testing.T) {
	sourcetest.Run(t, func(t *testing.T) sourcetest.Harness {
		c, ns := kube(t)
		m, err := NewManager(Config{
			Secrets:          c,
			StateSecret:      Ref{Namespace: ns, Name: stateName},
			SigningSecret:    Ref{Namespace: ns, Name: signingName},
			MaxTokenLifetime: 24 * time.Hour, ClockSkew: 5 * time.Minute, MaxAge: time.Hour,
			PublishLead: testLead,
		})
		if err != nil {
			t.Fatal(err)
		}
		secrets := c.Secrets(ns)
		put := func(ctx context.Context, doc []byte) error {
			s, err := secrets.Get(ctx, stateName, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				s = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: stateName}, Data: map[string][]byte{DataKey: doc}}
				_, err = secrets.Create(ctx, s, metav1.CreateOptions{})
				return err
			}
			if err != nil {
				return err
			}
			s.Data = map[string][]byte{DataKey: doc}
			_, err = secrets.Update(ctx, s, metav1.UpdateOptions{})
			return err
		}
		return sourcetest.Harness{
			Source: m.Source(),
			SetKeys: func(ctx context.Context, ks ...sourcetest.Key) error {
				doc, err := conformanceDocument(ks)
				if err != nil {
					return err
				}
				return put(ctx, doc)
			},
			Corrupt: func(ctx context.Context, kind sourcetest.Corruption, ks ...sourcetest.Key) error {
				doc, err := conformanceDocument(ks)
				if err != nil {
					return err
				}
				switch kind {
				case sourcetest.Truncated:
					if len(ks) == 0 {
						doc = doc[:len(doc)/2]
						break
					}
					// Cut in the middle of the last key: its private key, when it has one.
					last := ks[len(ks)-1]
					material := last.PublicPEM()
					if last.Private {
						material = last.PrivatePEM()
					}
					enc, _ := json.Marshal(string(material))
					cut := len(doc) / 2
					if i := bytes.Index(doc, enc[1:len(enc)-1]); i >= 0 {
						cut = i + len(enc)/2
					}
					doc = doc[:cut]
				case sourcetest.Unsupported:
					var d document
					if err := json.Unmarshal(doc, &d); err != nil {
						return err
					}
					d.Keys = append(d.Keys, docRecord{KID: "ed25519", Phase: keys.PhasePrevious, Algorithm: "EdDSA",
						PublicKey: string(sourcetest.UnsupportedKeyPEM()), Created: t0, PublishUntil: t0.Add(time.Hour)})
					if doc, err = json.Marshal(d); err != nil {
						return err
					}
				default:
					doc = sourcetest.GarbageBytes
				}
				return put(ctx, doc)
			},
			Remove: func(ctx context.Context) error { return secrets.Delete(ctx, stateName, metav1.DeleteOptions{}) },
			Phase: func(private bool) keys.Phase {
				if private {
					return keys.PhaseStaged
				}
				return keys.PhasePrevious
			},
			AbsentIsEmpty: true,
		}
	})
}

// conformanceDocument is a state document holding ks: a staged record for the key written with its
// private key (at most one), previous records for the others.
func conformanceDocument(ks []sourcetest.Key) ([]byte, error) {
	st := &State{}
	for _, k := range ks {
		pub := k.PublicKey()
		r := Record{KID: pub.KeyID(), Phase: keys.PhasePrevious, Algorithm: pub.Algorithm(), Public: pub,
			Created: t0, Promoted: t0, Retired: t0.Add(time.Hour), PublishUntil: t0.Add(48 * time.Hour)}
		if k.Private {
			r = Record{KID: pub.KeyID(), Phase: keys.PhaseStaged, Algorithm: pub.Algorithm(), Public: pub,
				Created: t0, private: secretPEM(k.PrivatePEM())}
		}
		st.Keys = append(st.Keys, r)
	}
	return MarshalDocument(st)
}
