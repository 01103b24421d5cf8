package workercli

import (
	"bytes"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lathe-ml/lathe/compute/cuda"
)

// TestCUDAWorkerWithoutAGPUStopsBeforeConnecting: --device cuda on a
// machine without a usable GPU exits non-zero with a message naming CUDA
// and what is missing, and never reaches the NATS address it was given.
func TestCUDAWorkerWithoutAGPUStopsBeforeConnecting(t *testing.T) {
	if _, err := cuda.Probe(0); err == nil {
		t.Skip("this machine has a usable GPU")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var dialled atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			dialled.Add(1)
			c.Close()
		}
	}()
	for _, dev := range []string{"cuda", "cuda:1"} {
		var stderr bytes.Buffer
		code := Main([]string{"--nats", "nats://" + ln.Addr().String(), "--device", dev, "--name", "w"}, &stderr)
		if code == 0 || !strings.Contains(stderr.String(), "CUDA") || !strings.Contains(stderr.String(), "libcuda.so.1") {
			t.Fatalf("--device %s: exit %d: %s", dev, code, stderr.String())
		}
		if strings.Contains(stderr.String(), "panic") {
			t.Fatalf("--device %s panicked: %s", dev, stderr.String())
		}
	}
	time.Sleep(50 * time.Millisecond)
	if n := dialled.Load(); n != 0 {
		t.Fatalf("the worker connected %d times before checking its device", n)
	}
	var stderr bytes.Buffer
	if code := Main([]string{"--nats", "nats://" + ln.Addr().String(), "--device", "tpu"}, &stderr); code != 2 || !strings.Contains(stderr.String(), "auto, cpu, cuda or cuda:N") {
		t.Fatalf("--device tpu: exit %d: %s", code, stderr.String())
	}
}
