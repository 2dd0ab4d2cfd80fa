package main

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/version"
)

// loadAWSConfig reads the AWS SDK's standard configuration: AWS_* environment variables
// (credentials, AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL and per-service AWS_ENDPOINT_URL_IAM /
// AWS_ENDPOINT_URL_STS), shared config files, web identity (IRSA), container and instance
// credentials. IAM is a global service: without a region, us-east-1 (where IAM signs in the aws
// partition) is used.
func loadAWSConfig(ctx context.Context) (aws.Config, error) {
	cfg, err := config.LoadDefaultConfig(ctx, config.WithAppID("kube-oidc-issuer_"+version.Get().Version))
	if err != nil {
		return aws.Config{}, fmt.Errorf("loading AWS configuration (AWS_* environment, ~/.aws): %w", err)
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	return cfg, nil
}
