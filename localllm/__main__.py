from localllm.cli.main import main

raise SystemExit(main())
