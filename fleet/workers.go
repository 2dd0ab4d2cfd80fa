package fleet

import (
	"context"
	"sync"
	"time"

	"k8s.io/client-go/util/workqueue"
)

// queue is the work queue the fleet's shared workers take cluster keys from.
type queue = workqueue.TypedRateLimitingInterface[string]

// runWorkers runs workers goroutines over q (each calling process until it reports the queue shut
// down) and calls resync every interval, until ctx ends; then it shuts q down and waits for the
// workers. It is the one loop of every per-cluster job of the fleet (mirrors, IAM): a fixed number
// of goroutines, whatever the number of clusters.
func runWorkers(ctx context.Context, q queue, workers int, interval time.Duration, process func(context.Context, queue) bool, resync func()) {
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for process(ctx, q) {
			}
		})
	}
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			q.ShutDown()
			wg.Wait()
			return
		case <-ticker.C:
			resync()
		}
	}
}
