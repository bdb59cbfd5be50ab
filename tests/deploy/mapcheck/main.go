// Command mapcheck applies the MutatingAdmissionPolicies of a rendered manifest stream to a Pod the
// way kube-apiserver does, offline: the same CEL compiler and environment, variables, match-condition
// matcher, JSON patches and server-side-apply merge (ApplyConfiguration), with the core/v1 OpenAPI
// schema client-go embeds. Kubernetes is Go; so is this check (tests/deploy uses it).
//
//	mapcheck POLICIES.yaml POD.yaml > MUTATED.json
//
// Policies whose objectSelector does not select the pod, or whose match conditions are false, leave
// it alone. Any compile, match or patch error exits 1 with the message on stderr.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/apiserver/pkg/admission"
	plugincel "k8s.io/apiserver/pkg/admission/plugin/cel"
	"k8s.io/apiserver/pkg/admission/plugin/policy/mutating/patch"
	"k8s.io/apiserver/pkg/admission/plugin/policy/validating"
	"k8s.io/apiserver/pkg/admission/plugin/webhook/matchconditions"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/apiserver/pkg/cel/environment"
	"k8s.io/client-go/openapi/openapitest"
	"k8s.io/klog/v2"
	"sigs.k8s.io/yaml"
)

var (
	podsGVR = schema.GroupVersionResource{Version: "v1", Resource: "pods"}
	podGVK  = schema.GroupVersionKind{Version: "v1", Kind: "Pod"}
)

func main() {
	quiet() // the type converter logs while it loads the schema; errors that matter come back as values
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: mapcheck POLICIES.yaml POD.yaml")
		os.Exit(2)
	}
	if err := run(os.Args[1], os.Args[2], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "mapcheck:", err)
		os.Exit(1)
	}
}

func run(policiesPath, podPath string, out io.Writer) error {
	policies, err := readPolicies(policiesPath)
	if err != nil {
		return err
	}
	if len(policies) == 0 {
		return fmt.Errorf("%s: no admissionregistration.k8s.io/v1 MutatingAdmissionPolicy", policiesPath)
	}
	raw, err := os.ReadFile(podPath)
	if err != nil {
		return err
	}
	pod := &corev1.Pod{}
	if err := yaml.UnmarshalStrict(raw, pod); err != nil {
		return fmt.Errorf("%s: %w", podPath, err)
	}
	pod.SetGroupVersionKind(podGVK)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	types := patch.NewTypeConverterManager(nil, openapitest.NewEmbeddedFileClient())
	go types.Run(ctx)
	for types.GetTypeConverter(podGVK) == nil {
		if ctx.Err() != nil {
			return errors.New("no type converter for core/v1 Pod")
		}
		time.Sleep(20 * time.Millisecond)
	}

	var obj runtime.Object = pod
	for _, policy := range policies {
		if obj, err = apply(ctx, policy, obj.(*corev1.Pod), types); err != nil {
			return fmt.Errorf("policy %s: %w", policy.Name, err)
		}
	}
	encoded, err := json.MarshalIndent(obj, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(out, string(encoded))
	return err
}

func readPolicies(path string) ([]*admissionregistrationv1.MutatingAdmissionPolicy, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var policies []*admissionregistrationv1.MutatingAdmissionPolicy
	decoder := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(raw), 4096)
	for {
		var doc map[string]any
		if err := decoder.Decode(&doc); errors.Is(err, io.EOF) {
			return policies, nil
		} else if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if doc["apiVersion"] != "admissionregistration.k8s.io/v1" || doc["kind"] != "MutatingAdmissionPolicy" {
			continue
		}
		encoded, err := json.Marshal(doc)
		if err != nil {
			return nil, err
		}
		policy := &admissionregistrationv1.MutatingAdmissionPolicy{}
		if err := yaml.UnmarshalStrict(encoded, policy); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		policies = append(policies, policy)
	}
}

// apply does what the API server does with one policy on a pod CREATE: select, match, mutate.
func apply(ctx context.Context, policy *admissionregistrationv1.MutatingAdmissionPolicy, pod *corev1.Pod,
	types patch.TypeConverterManager) (*corev1.Pod, error) {
	if selector := policy.Spec.MatchConstraints.ObjectSelector; selector != nil {
		selects, err := metav1.LabelSelectorAsSelector(selector)
		if err != nil {
			return nil, err
		}
		if !selects.Matches(labelSet(pod.Labels)) {
			return pod, nil
		}
	}
	options := plugincel.OptionalVariableDeclarations{HasParams: policy.Spec.ParamKind != nil, HasAuthorizer: true}
	compiler, err := plugincel.NewCompositedCompiler(environment.MustBaseEnvSet(environment.DefaultCompatibilityVersion()))
	if err != nil {
		return nil, err
	}
	variables := make([]plugincel.NamedExpressionAccessor, len(policy.Spec.Variables))
	for i, v := range policy.Spec.Variables {
		variables[i] = &validating.Variable{Name: v.Name, Expression: v.Expression}
	}
	compiler.CompileAndStoreVariables(variables, options, environment.StoredExpressions)
	ctx = compiler.CreateContext(ctx) // variables are evaluated lazily, once per admission, in this context
	namespace := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: pod.Namespace,
		Labels: map[string]string{"kubernetes.io/metadata.name": pod.Namespace}}}
	attributes := func(object *corev1.Pod) *admission.VersionedAttributes {
		record := admission.NewAttributesRecord(object, nil, podGVK, object.Namespace, object.Name, podsGVR, "",
			admission.Create, &metav1.CreateOptions{}, false, nil)
		return &admission.VersionedAttributes{Attributes: record, VersionedKind: podGVK, VersionedObject: object}
	}
	if len(policy.Spec.MatchConditions) > 0 {
		accessors := make([]plugincel.ExpressionAccessor, len(policy.Spec.MatchConditions))
		for i := range policy.Spec.MatchConditions {
			accessors[i] = (*matchconditions.MatchCondition)(&policy.Spec.MatchConditions[i])
		}
		matcher := matchconditions.NewMatcher(compiler.CompileCondition(accessors, options, environment.StoredExpressions),
			policy.Spec.FailurePolicy, "policy", "mutate", policy.Name)
		result := matcher.Match(ctx, attributes(pod), nil, allowAll{})
		if result.Error != nil {
			return nil, fmt.Errorf("match condition %s: %w", result.FailedConditionName, result.Error)
		}
		if !result.Matches {
			return pod, nil
		}
	}
	patchOptions := options
	patchOptions.HasPatchTypes = true
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	for i, mutation := range policy.Spec.Mutations {
		var patcher patch.Patcher
		var expression plugincel.ExpressionAccessor
		switch {
		case mutation.PatchType == admissionregistrationv1.PatchTypeApplyConfiguration && mutation.ApplyConfiguration != nil:
			expression = &patch.ApplyConfigurationCondition{Expression: mutation.ApplyConfiguration.Expression}
		case mutation.PatchType == admissionregistrationv1.PatchTypeJSONPatch && mutation.JSONPatch != nil:
			expression = &patch.JSONPatchCondition{Expression: mutation.JSONPatch.Expression}
		default:
			return nil, fmt.Errorf("mutation %d: no %s expression", i, mutation.PatchType)
		}
		evaluator := compiler.CompileMutatingEvaluator(expression, patchOptions, environment.StoredExpressions)
		if errs := evaluator.CompilationErrors(); len(errs) > 0 {
			return nil, fmt.Errorf("mutation %d: %w", i, errors.Join(errs...))
		}
		if mutation.PatchType == admissionregistrationv1.PatchTypeJSONPatch {
			patcher = patch.NewJSONPatcher(evaluator)
		} else {
			patcher = patch.NewApplyConfigurationPatcher(evaluator)
		}
		patched, err := patcher.Patch(ctx, patch.Request{
			MatchedResource:     podsGVR,
			VersionedAttributes: attributes(pod),
			ObjectInterfaces:    admission.NewObjectInterfacesFromScheme(scheme),
			OptionalVariables:   plugincel.OptionalVariableBindings{Authorizer: allowAll{}},
			Namespace:           namespace,
			TypeConverter:       types.GetTypeConverter(podGVK),
		}, celconfig.RuntimeCELCostBudget)
		if err != nil {
			return nil, fmt.Errorf("mutation %d: %w", i, err)
		}
		// As the API server does after each patch: back to the typed object, defaulted.
		typed, err := scheme.ConvertToVersion(patched, corev1.SchemeGroupVersion)
		if err != nil {
			return nil, fmt.Errorf("mutation %d: %w", i, err)
		}
		scheme.Default(typed)
		next, ok := typed.(*corev1.Pod)
		if !ok {
			return nil, fmt.Errorf("mutation %d: got a %T, not a Pod", i, typed)
		}
		pod = next
	}
	return pod, nil
}

func quiet() {
	flags := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(flags)
	for name, value := range map[string]string{"logtostderr": "false", "alsologtostderr": "false", "stderrthreshold": "FATAL"} {
		if err := flags.Set(name, value); err != nil {
			panic(err)
		}
	}
	klog.SetOutput(io.Discard)
}

type labelSet map[string]string

func (l labelSet) Has(key string) bool              { _, ok := l[key]; return ok }
func (l labelSet) Get(key string) string            { return l[key] }
func (l labelSet) Lookup(key string) (string, bool) { v, ok := l[key]; return v, ok }

// allowAll answers the "authorizer" variable; the policies checked here do not consult it.
type allowAll struct{}

func (allowAll) Authorize(context.Context, authorizer.Attributes) (authorizer.Decision, string, error) {
	return authorizer.DecisionAllow, "", nil
}
