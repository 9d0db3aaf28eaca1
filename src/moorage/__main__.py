from moorage.cli.main import main

main()
