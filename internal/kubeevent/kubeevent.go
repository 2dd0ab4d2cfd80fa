// Package kubeevent records the issuer's Warning Events on Secrets, the one kind of object its
// Events are about (a state Secret, a cluster's signing-key Secret), so that `kubectl describe`
// and event-based alerting show what the log says.
package kubeevent

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
)

// Component is the Events' source and reporting controller.
const Component = "kube-oidc-issuer"

// WarnOnSecret creates a Warning Event about Secret namespace/name. Callers log a failure: an
// Event is never worth failing the work it reports on.
func WarnOnSecret(ctx context.Context, events corev1client.EventsGetter, namespace, name, reason, msg string, now time.Time) error {
	at := metav1.NewTime(now)
	ev := &corev1.Event{
		ObjectMeta:          metav1.ObjectMeta{GenerateName: name + ".", Namespace: namespace},
		InvolvedObject:      corev1.ObjectReference{APIVersion: "v1", Kind: "Secret", Namespace: namespace, Name: name},
		Reason:              reason,
		Message:             msg,
		Type:                corev1.EventTypeWarning,
		Source:              corev1.EventSource{Component: Component},
		ReportingController: Component,
		ReportingInstance:   Component,
		FirstTimestamp:      at,
		LastTimestamp:       at,
		Count:               1,
	}
	if _, err := events.Events(namespace).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("recording Event %s on Secret %s/%s: %w", reason, namespace, name, err)
	}
	return nil
}
