package run

import (
	"errors"
	"fmt"

	"github.com/lathe-ml/lathe/compute"
	"github.com/lathe-ml/lathe/distill"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/recipes"
	"github.com/lathe-ml/lathe/trainer"
)

// policyFields names the recipe block each of the job's policies was built
// from, for errors about a policy.
type policyFields map[trainer.Policy]string

// add records policies built from the blocks block.0, block.1, …
func (f policyFields) add(block string, ps []trainer.Policy) {
	for i, p := range ps {
		f[p] = fmt.Sprintf("%s.%d", block, i)
	}
}

// deviceError points a trainer.Unsupported at the recipe field that asks
// for it; other errors pass.
func deviceError(job *recipes.Job, err error, fields policyFields) error {
	var u *trainer.Unsupported
	if !errors.As(err, &u) {
		return err
	}
	field := u.Field
	if u.Policy != nil {
		field = fields[u.Policy]
	}
	if u.Layer != "" && job.Model.Arch == "graph" {
		field = "model.layer." + u.Layer
	}
	if field == "" {
		return fmt.Errorf("run: %v; run this recipe on the CPU", u)
	}
	return job.Errorf(field, "%v; run this recipe on the CPU", u)
}

// checkDevice asks, before anything trains, whether the device trains the
// job: cfg holds the policies and the optimizer, and what the job's
// teachers will be is described by the job (they are trained or read
// later).
func checkDevice(job *recipes.Job, cfg trainer.Config, fields policyFields) error {
	if d := job.Distill; d != nil {
		cfg.KD = &distill.Config{Temperature: d.Temperature, Alpha: d.Alpha}
		if d.Hint != nil {
			cfg.Hint = &trainer.HintConfig{}
		}
		if d.Offline {
			cfg.TeacherLogits = []float32{}
		}
	}
	if job.Teacher != nil {
		cfg.Teachers = make([]*model.Model, max(job.Teacher.Count, 1))
	}
	return deviceError(job, trainer.DeviceSupports(cfg, false), fields)
}

// deviceInfo describes a device for the manifest.
func deviceInfo(dev compute.Device) compute.Info {
	if d, ok := dev.(compute.Describer); ok {
		return d.Describe()
	}
	return compute.Info{Engine: dev.Name()}
}
