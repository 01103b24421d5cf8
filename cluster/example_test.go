package cluster_test

import (
	"fmt"
	"net"

	"github.com/lathe-ml/lathe/cluster"
)

// A worker's end of the peer data plane: it listens where it is told and
// announces the address the job's other replicas dial (what its
// registration carries); the coordinator chooses the plane for the job.
func ExampleListenPeers() {
	plane, err := cluster.ParsePlane("")
	fmt.Println(plane, err)
	if _, err := cluster.ParsePlane("carrier-pigeon"); err != nil {
		fmt.Println(err)
	}
	p, err := cluster.ListenPeers("job", "worker-1", []byte("the job's secret"),
		cluster.PeerConfig{Listen: "127.0.0.1:0"}, "nats://127.0.0.1:4222", nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer p.Close()
	host, _, _ := net.SplitHostPort(p.Addr())
	fmt.Println("dial me at", host)
	// Output:
	// auto <nil>
	// cluster: data plane "carrier-pigeon": auto, peer or nats
	// dial me at 127.0.0.1
}
